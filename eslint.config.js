// typescript-eslint's recommended rules, plus a few that catch real mistakes in this code base.
// Formatting is Prettier's (.prettierrc.json), not ESLint's.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'bench/.ab/', 'bench/results/', '.kms/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      // Unused names are dead code or a forgotten use; a leading _ says "unused on purpose".
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // A floating promise that rejects is an unhandled rejection: handle it or mark it with `void`.
      'no-void': 'off',
      eqeqeq: ['error', 'always', { null: 'ignore' }], // `== null` means null or undefined, on purpose
      'no-console': 'error',
    },
  },
  {
    // Tools that print, and the guard that wraps console.error itself (functions-framework logs there).
    files: ['test/**', 'bench/**', 'scripts/**', 'shared/http/framework-log-guard.ts'],
    rules: { 'no-console': 'off' },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
);
