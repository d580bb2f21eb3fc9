// Module hooks for bench/import-cost.mjs: reports the URL of every module the ES module loader loads
// (CommonJS files that `require` loads are counted from require.cache instead).
let port

export function initialize(data) {
  port = data.port
}

export async function load(url, context, nextLoad) {
  port.postMessage(url)
  return nextLoad(url, context)
}
