// Reads JSON lines {secret, id, timestamp, body, signature} on stdin and prints one line per input:
// "ok" when the Standard Webhooks reference library verifies it, otherwise "fail: <reason>".
// The library checks the timestamp against the clock, so each input says the time it was signed.
const { Webhook } = require("standardwebhooks");
const readline = require("readline");
const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  try {
    const m = JSON.parse(line);
    const wh = new Webhook(m.secret);
    const realNow = Date.now;
    Date.now = () => m.timestamp * 1000; // verify as of the signing time: vectors are old
    try {
      wh.verify(m.body, { "webhook-id": m.id, "webhook-timestamp": String(m.timestamp), "webhook-signature": m.signature });
    } finally {
      Date.now = realNow;
    }
    console.log("ok");
  } catch (e) {
    console.log("fail: " + (e && e.message ? e.message : String(e)));
  }
});
