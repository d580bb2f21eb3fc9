/**
 * JSON.parse keeps the last of repeated object keys, so `{"audience":"a","audience":"b"}` would be a
 * request for "b" that a proxy or log reader may take for "a". A repeated top-level key is refused, as a
 * repeated form parameter is. One linear pass over the text, once it parsed.
 */

/** The first key that appears twice in the top-level object of `text`, or undefined. Assumes nothing about validity. */
export function repeatedTopLevelKey(text: string): string | undefined {
  const seen = new Set<string>()
  let depth = 0
  let i = 0
  const n = text.length
  while (i < n) {
    const c = text.charCodeAt(i)
    if (c === 0x22 /* " */) {
      const start = i
      i++
      while (i < n && text.charCodeAt(i) !== 0x22) i += text.charCodeAt(i) === 0x5c /* \ */ ? 2 : 1
      const end = ++i
      if (depth !== 1) continue
      let j = i
      while (j < n && /\s/.test(text[j] as string)) j++
      if (text[j] !== ':') continue
      let key: string
      try {
        key = JSON.parse(text.slice(start, end)) as string // escapes decoded: "aud\u0069ence" is "audience"
      } catch {
        return undefined // not JSON: the parser will say so
      }
      if (seen.has(key)) return key
      seen.add(key)
      continue
    }
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) depth++
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--
    i++
  }
  return undefined
}
