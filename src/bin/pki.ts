#!/usr/bin/env node
import { runPkiCli } from '../cli/pki.js'

process.exitCode = await runPkiCli(process.argv.slice(2), process.env)
