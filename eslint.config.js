// Lint gate (`npm run lint`, part of `npm test`): typescript-eslint with type information, a few rules that
// catch real bugs, tuned to pass on the current code without reformatting it. Formatting is not checked here.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'dist-bench/', '**/*.js', '**/*.mjs'] },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // a focused test silently skips the rest of the suite
      'no-restricted-syntax': ['error', { selector: "MemberExpression[property.name='only'][object.name=/^(test|t)$/], MemberExpression[property.name='only'][object.property.name=/^(serial|failing)$/]", message: 'no .only in tests' }],
      // a promise nobody awaits or catches loses its error (mark deliberate fire-and-forget with `void`)
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/await-thenable': 'error',
      'no-debugger': 'error',
      'no-dupe-keys': 'error',
      'no-self-assign': 'error',
      'no-unreachable': 'error',
      eqeqeq: ['error', 'smart'],
    },
  },
);
