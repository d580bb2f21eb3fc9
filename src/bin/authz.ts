#!/usr/bin/env node
import { runAuthzCli } from '../cli/authz.js'

process.exitCode = await runAuthzCli(process.argv.slice(2), process.env)
