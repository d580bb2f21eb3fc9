#!/usr/bin/env node
import { runDemo } from './demo.js'

const results = await runDemo((line) => console.log(line))
process.exitCode = results.every((r) => r.ok) ? 0 : 1
