// The replicas' options: a mistake stops the sealing service with a message naming the variable.
import { describe, expect, it } from 'vitest';
import { KmsError } from '../../shared/errors.js';
import { loadSealerOptions } from '../../sealer/options.js';

describe('replica options', () => {
  it('KMS_SEALER_PEERS: a comma list of https://host:port, spaces and empty items ignored', () => {
    const options = loadSealerOptions({ KMS_SEALER_PEERS: ' https://a:9877, ,https://[::1]:9 ' });
    expect(options.peers).toEqual(['https://a:9877', 'https://[::1]:9']);
    expect(loadSealerOptions({}).peers).toEqual([]);
    expect(loadSealerOptions({}).syncSeconds).toBe(5);
  });

  it.each(['http://a:9877', 'https://a:9877/path', 'https://a:9877?x', 'a:9877'])('refuses the peer %s, naming the variable', (peer) => {
    const error = (() => {
      try {
        loadSealerOptions({ KMS_SEALER_PEERS: `https://ok:1,${peer}` });
      } catch (caught) {
        return caught;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(KmsError);
    expect((error as KmsError).code).toBe('CONFIG');
    expect((error as KmsError).message).toBe('KMS_SEALER_PEERS: each peer must be https://host:port, with nothing after it');
  });

  it('KMS_SEALER_SYNC_SECONDS and KMS_SEALER_SAMPLE_INIT_DATA are checked', () => {
    expect(() => loadSealerOptions({ KMS_SEALER_SYNC_SECONDS: '0' })).toThrow('KMS_SEALER_SYNC_SECONDS must be between 1 and 3600, got 0');
    expect(() => loadSealerOptions({ KMS_SEALER_SAMPLE_INIT_DATA: 'abc' })).toThrow('KMS_SEALER_SAMPLE_INIT_DATA must be 96 hex digits');
    expect(loadSealerOptions({ KMS_SEALER_SAMPLE_INIT_DATA: 'AB'.repeat(48) }).sampleInitData).toBe('ab'.repeat(48));
  });
});
