// Loaded with `--import` into every process a test starts (servers, CLIs, lock holders): when the test
// process that started it is gone (tap killed it at its timeout, or it crashed), the child exits too,
// instead of serving on a stray port for the next twenty minutes. The check is a ppid poll, so it holds
// even when the test process was killed with SIGKILL and ran no teardown.
const parent = process.ppid
setInterval(() => {
  if (process.ppid !== parent) process.kill(process.pid, 'SIGKILL')
}, 500).unref()
