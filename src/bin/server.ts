#!/usr/bin/env node
import { main } from '../server.js'

void main()
