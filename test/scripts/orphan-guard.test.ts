/**
 * test/helpers/orphan-guard.mjs: a process a test started exits when the test process is gone, even when
 * that one was killed with SIGKILL and ran no teardown (tap's timeout; before, servers ran on for 20 min).
 */
import { spawn } from 'node:child_process'
import t from 'tap'
import { ORPHAN_GUARD } from '../helpers/processes.js'

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

t.test('a guarded child outlives its parent by at most a poll', async (t) => {
  // sh stands for the test process: it starts a guarded node that would run forever (its output on fd 3,
  // which it holds open), then is killed.
  const parent = spawn('sh', ['-c', `"${process.execPath}" ${ORPHAN_GUARD} -e 'console.log(process.pid); setInterval(() => {}, 1000)' </dev/null >&3 & wait`], { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] })
  const pipe = parent.stdio[3] as NodeJS.ReadableStream
  const pid = await new Promise<number>((resolve) => pipe.once('data', (c: Buffer) => resolve(Number(c.toString().trim())))) // up, guard loaded
  t.teardown(() => {
    if (alive(pid)) process.kill(pid, 'SIGKILL')
  })
  t.ok(alive(pid), 'the child runs')
  parent.kill('SIGKILL')
  // Bounded wait on the event (the child's exit), polled: it is not our child, so no 'exit' event here.
  for (let i = 0; i < 200 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50))
  t.notOk(alive(pid), 'the orphaned child exited by itself')
})
