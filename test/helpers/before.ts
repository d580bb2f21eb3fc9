/** tap's `before`: the test material every test file shares (see material.ts). */
import { generateMaterial } from './material.js'

await generateMaterial()
