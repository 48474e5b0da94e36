// Soak: a moderate rate for a long time (default 30 minutes). Watches for what only time
// shows: a growing outbox backlog or consumer lag, memory growth (process_resident_memory_bytes
// on the service dashboard), latency creeping up.
//
//   k6 run -e API_KEY=$ADMIN loadtests/soak.js                           # 5 orders/s for 30 minutes
//   k6 run -e API_KEY=$ADMIN -e RATE=10 -e DURATION=2h loadtests/soak.js
//
// At higher rates, start the system under test with higher per-key limits, as for the spike
// (loadtests/spike.js; README, "Limits").
import { checkout } from './lib/saga.js';

export { checkout };

const RATE = Number(__ENV.RATE || 5);
const DURATION = __ENV.DURATION || '30m';

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      exec: 'checkout',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.max(5, RATE * 3),
      maxVUs: Math.max(20, RATE * 10),
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.005'],
    order_reached_terminal: ['rate>0.999'],
    order_unexpected_outcome: ['rate<0.005'],
    'http_req_duration{name:POST /orders}': ['p(99)<1000'],
    'http_req_duration{name:GET /orders/{id}}': ['p(99)<500'],
    order_time_to_terminal: ['p(95)<5000', 'p(99)<10000'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};
