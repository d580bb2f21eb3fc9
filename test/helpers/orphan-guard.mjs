// Loaded with `--import` into every process a test starts (servers, CLIs, lock holders): when the test
// process that started it is gone (tap killed it at its timeout, or it crashed), the child exits too,
// instead of serving on a stray port for the next twenty minutes. The check is a ppid poll, so it holds
// even when the test process was killed with SIGKILL and ran no teardown.
// Already orphaned when it starts (its parent died first): init (pid 1) adopted it.
const parent = process.ppid
const check = () => {
  if (process.ppid !== parent || parent === 1) process.kill(process.pid, 'SIGKILL')
}
check()
setInterval(check, 500).unref()
