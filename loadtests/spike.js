// Spike: a calm baseline, a sudden burst to ten times the rate, then calm again. The saga may
// slow down during the burst (lag, outbox backlog) but must not lose or fail orders: every
// order still reaches a terminal state with the expected outcome.
//
// Each order is polled every 0.2 s until it ends: at the peak, sagas of a second or more make
// one key send over 200 requests a second, the API's per-key rate limit. Start the system under
// test with higher limits (README, "Limits"), e.g. the embedded mode:
//
//   ORDER_API_RATE_LIMIT_PER_SEC=5000 ORDER_API_MAX_IN_FLIGHT_PER_KEY=512 cargo run --release
//   k6 run -e API_KEY=$ADMIN loadtests/spike.js                          # 5/s → 50/s for 30 s → 5/s
//   k6 run -e API_KEY=$ADMIN -e BASE=10 -e PEAK=100 loadtests/spike.js
//
// TIME_SCALE (default 1) multiplies every stage's duration: 0.1 runs the same shape in 10 s
// (CI's smoke run).
import { checkout } from './lib/saga.js';

export { checkout };

const BASE = Number(__ENV.BASE || 5);
const PEAK = Number(__ENV.PEAK || 50);
const TIME_SCALE = Number(__ENV.TIME_SCALE || 1);
const seconds = (s) => `${Math.max(1, Math.round(s * TIME_SCALE * 1000))}ms`;

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      exec: 'checkout',
      startRate: BASE,
      timeUnit: '1s',
      preAllocatedVUs: PEAK * 2,
      maxVUs: PEAK * 10,
      stages: [
        { target: BASE, duration: seconds(20) },
        { target: PEAK, duration: seconds(5) },
        { target: PEAK, duration: seconds(30) },
        { target: BASE, duration: seconds(5) },
        { target: BASE, duration: seconds(40) },
      ],
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.02'],
    order_reached_terminal: ['rate>0.99'],
    order_unexpected_outcome: ['rate<0.01'],
    'http_req_duration{name:POST /orders}': ['p(95)<2000'],
    order_time_to_terminal: ['p(99)<20000'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};
