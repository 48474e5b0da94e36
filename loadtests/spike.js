// Spike: a calm baseline, a sudden burst to ten times the rate, then calm again. The saga may
// slow down during the burst (lag, outbox backlog) but must not lose or fail orders: every
// order still reaches a terminal state with the expected outcome.
//
//   k6 run loadtests/spike.js                       # 5/s → 50/s for 30 s → 5/s
//   BASE=10 PEAK=100 k6 run loadtests/spike.js
import { checkout } from './lib/saga.js';

export { checkout };

const BASE = Number(__ENV.BASE || 5);
const PEAK = Number(__ENV.PEAK || 50);

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
        { target: BASE, duration: '20s' },
        { target: PEAK, duration: '5s' },
        { target: PEAK, duration: '30s' },
        { target: BASE, duration: '5s' },
        { target: BASE, duration: '40s' },
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
