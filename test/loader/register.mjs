// `node --import=./test/loader/register.mjs file.ts`: runs this repository's TypeScript as the JavaScript
// `tsc -b` compiled from it (hooks.mjs). tap loads it for every test file (package.json, tap.node-arg);
// test helpers give it to the processes they start.
import { register } from 'node:module'

register('./hooks.mjs', import.meta.url)
// Stack traces name the TypeScript lines (tap passes --enable-source-maps; a plain `node` run does not).
process.setSourceMapsEnabled(true)
