// Shared by the k6 scenarios in loadtests/: the order mix, placing an order, and polling it to
// a terminal state within a bound. Not a scenario itself.
import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
// How long an order may take to reach completed/cancelled before the iteration gives up.
export const POLL_TIMEOUT_S = Number(__ENV.POLL_TIMEOUT_S || 20);
const POLL_INTERVAL_S = Number(__ENV.POLL_INTERVAL_S || 0.2);
// An admin API key (the mix places orders for several customers): API_KEY, sent as
// `Authorization: Bearer <key>`. Unset only against an API in open mode (ORDER_API_AUTH=open).
const API_KEY = __ENV.API_KEY || '';
const AUTH_HEADERS = API_KEY ? { Authorization: `Bearer ${API_KEY}` } : {};

// From POST /orders to the first GET that shows a terminal state.
export const timeToTerminal = new Trend('order_time_to_terminal', true);
// Orders that reached a terminal state within POLL_TIMEOUT_S (rate over all placed).
export const reachedTerminal = new Rate('order_reached_terminal');
// Terminal orders by final status (tag status) and whether the outcome was the expected one.
export const ordersTerminal = new Counter('orders_terminal');
export const unexpectedOutcome = new Rate('order_unexpected_outcome');

// The realistic mix against the demo data (README "Demo data"): mostly orders that complete,
// plus a share of each failure outcome. Weights add up to 100.
const DESTINATIONS = ['NL', 'DE', 'FR', 'US'];
export const MIX = [
  {
    weight: 80,
    name: 'completed',
    expect: { status: 'completed', reason: null },
    body: () => ({
      customer_id: 'cust-rich',
      items: [
        { sku: 'sku-tee', quantity: 1 + Math.floor(Math.random() * 3) },
        ...(Math.random() < 0.5 ? [{ sku: 'sku-mug', quantity: 1 }] : []),
      ],
      ship_to: { country: DESTINATIONS[Math.floor(Math.random() * DESTINATIONS.length)] },
    }),
  },
  {
    weight: 7,
    name: 'out_of_stock',
    expect: { status: 'cancelled', reason: 'out_of_stock' },
    body: () => ({ customer_id: 'cust-rich', items: [{ sku: 'sku-soldout', quantity: 1 }], ship_to: { country: 'NL' } }),
  },
  {
    weight: 7,
    name: 'payment_declined',
    expect: { status: 'cancelled', reason: 'payment_declined' },
    body: () => ({ customer_id: 'cust-poor', items: [{ sku: 'sku-tee', quantity: 2 }], ship_to: { country: 'NL' } }),
  },
  {
    weight: 6,
    name: 'destination_not_served',
    expect: { status: 'cancelled', reason: 'destination_not_served' },
    body: () => ({ customer_id: 'cust-rich', items: [{ sku: 'sku-mug', quantity: 1 }], ship_to: { country: 'JP' } }),
  },
];

// The order in which iterations take the kinds: every 100 consecutive iterations (the sum of
// the weights) hold each kind exactly its weight, spread evenly (smooth weighted round-robin),
// so that even a short run sees every outcome (a random pick left some out).
const SEQUENCE = (() => {
  const total = MIX.reduce((sum, kind) => sum + kind.weight, 0);
  const current = MIX.map(() => 0);
  const sequence = [];
  for (let n = 0; n < total; n++) {
    let best = 0;
    MIX.forEach((kind, i) => {
      current[i] += kind.weight;
      if (current[i] > current[best]) best = i;
    });
    current[best] -= total;
    sequence.push(MIX[best]);
  }
  return sequence;
})();

export function pickKind() {
  return SEQUENCE[exec.scenario.iterationInTest % SEQUENCE.length];
}

const JSON_HEADERS = Object.assign({ 'Content-Type': 'application/json' }, AUTH_HEADERS);

// Place one order of a random kind and poll it until it is terminal (or the bound passes).
export function checkout() {
  const kind = pickKind();
  const placed = http.post(`${BASE_URL}/orders`, JSON.stringify(kind.body()), {
    headers: JSON_HEADERS,
    tags: { name: 'POST /orders', kind: kind.name },
  });
  const accepted = check(placed, {
    'order accepted (202)': (r) => r.status === 202,
    'location header': (r) => (r.headers.Location || r.headers.location || '').startsWith('/orders/'),
  });
  if (!accepted) return;
  const id = placed.json('id');
  const started = Date.now();
  const deadline = started + POLL_TIMEOUT_S * 1000;
  let order = null;
  while (Date.now() < deadline) {
    sleep(POLL_INTERVAL_S);
    const res = http.get(`${BASE_URL}/orders/${id}`, { headers: AUTH_HEADERS, tags: { name: 'GET /orders/{id}' } });
    if (res.status !== 200) continue;
    const body = res.json();
    if (body.status === 'completed' || body.status === 'cancelled') {
      order = body;
      break;
    }
  }
  reachedTerminal.add(order !== null, { kind: kind.name });
  check(order, { [`order terminal within ${POLL_TIMEOUT_S}s`]: (o) => o !== null });
  if (order === null) return;
  timeToTerminal.add(Date.now() - started, { kind: kind.name });
  ordersTerminal.add(1, { status: order.status, kind: kind.name });
  const expected = order.status === kind.expect.status && order.reason === kind.expect.reason;
  unexpectedOutcome.add(!expected, { kind: kind.name });
  check(order, { 'expected outcome': () => expected });
}
