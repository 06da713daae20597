/**
 * `node --import <this> program`: writes `peak-rss-kb=<n>` to stderr as the program exits, so a
 * program's peak RSS is measured with its own code unchanged (bench/files.ts, the command line).
 */
import { peakRssKb } from './peak-rss.js';

process.on('exit', () => process.stderr.write(`peak-rss-kb=${peakRssKb()}\n`));
