#!/usr/bin/env node
import { runKeysCli } from '../cli/keys.js'

process.exitCode = await runKeysCli(process.argv.slice(2), process.env)
