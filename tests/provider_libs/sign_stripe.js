// Signs a webhook body (read from stdin) with Stripe's own Node library and
// prints the Stripe-Signature header. Used by tests/providers_libs.rs.
//
//     node sign_stripe.js SECRET UNIX_TS
const Stripe = require('stripe');

const [secret, ts] = process.argv.slice(2);
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const payload = Buffer.concat(chunks).toString('utf8');
  const header = Stripe.webhooks.generateTestHeaderString({
    payload,
    secret,
    timestamp: Number(ts),
  });
  process.stdout.write(header + '\n');
});
