// The cleaning steps of bench/cleaning.py, in the browser: a model trained on cleaned text
// must read cleaned text here too. Each function mirrors the Python step of the same name;
// `lemmatize` has no browser version, so edgebert refuses to write a page for such a model.

const TAG = /<[^>]+>/g;
const URL_RE = /(?:https?:\/\/|www\.)\S+/giu;
const USER = /(?<![\p{L}\p{N}_@])@[\p{L}\p{N}_]+/gu; // Python's \w: letters, digits, _
const SPACE = /[\s\x1c-\x1f\x85]+/gu;
const INVISIBLE = /[\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad]/g;
const CONTROL = /[\p{Cc}\p{Cf}\p{Co}\p{Cs}]/gu;

function unescapeHtml(text) {
  // The HTML parser's character-reference rules are the ones Python's html.unescape follows.
  // A <textarea> reads its content as text, so tags are left alone and only entities decode.
  const area = document.createElement("textarea");
  area.innerHTML = text.replace(/</g, "&lt;");
  return area.value;
}

export const CLEANERS = {
  strip_html: (t) => t.replace(TAG, " "),
  unescape: unescapeHtml,
  nfkc: (t) => t.normalize("NFKC"),
  remove_control: (t) => t.replace(INVISIBLE, "").replace(/[\t\n\r]/g, " ").replace(CONTROL, ""),
  collapse_whitespace: (t) => t.replace(SPACE, " ").trim(),
  lower: (t) => t.toLowerCase(),
  replace_urls: (t) => t.replace(URL_RE, "http"),
  replace_users: (t) => t.replace(USER, "@user"),
};

export function makeCleaner(steps) {
  const functions = steps.map((name) => {
    if (!(name in CLEANERS)) throw new Error(`cleaning step '${name}' has no browser version`);
    return CLEANERS[name];
  });
  return (text) => functions.reduce((t, f) => f(t), text);
}
