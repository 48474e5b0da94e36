// The checkout scenario: customers place orders at a steady arrival rate with a realistic mix
// (about 80 % complete; the rest are out of stock, declined or not shippable, one share each),
// and each order is polled with GET /orders/{id} until it is completed or cancelled, within
// POLL_TIMEOUT_S. Fails (exit 99) when a threshold is crossed.
//
// API_KEY is an admin key (the embedded mode prints one at start-up, `admin`):
//
//   k6 run -e API_KEY=$ADMIN loadtests/orders.js                        # 10 orders/s for 1 minute
//   k6 run -e API_KEY=$ADMIN -e RATE=20 -e DURATION=5m -e BASE_URL=http://127.0.0.1:8080 loadtests/orders.js
//
// At higher rates one key's polling can pass the API's per-key rate limit (200 requests/s):
// start the system under test with ORDER_API_RATE_LIMIT_PER_SEC=5000 ORDER_API_MAX_IN_FLIGHT_PER_KEY=512
// (README, "Limits"). docs/observability.md shows how its metrics reach Prometheus
// (OpenTelemetry or remote write).
import { checkout } from './lib/saga.js';

export { checkout };

const RATE = Number(__ENV.RATE || 10);
const DURATION = __ENV.DURATION || '1m';

export const options = {
  scenarios: {
    checkout: {
      executor: 'constant-arrival-rate',
      exec: 'checkout',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      // Each iteration polls its order for up to a few seconds: enough VUs for that.
      preAllocatedVUs: Math.max(5, RATE * 3),
      maxVUs: Math.max(20, RATE * 10),
    },
  },
  thresholds: {
    // Errors: almost no request fails, every order ends, and the way it should.
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    order_reached_terminal: ['rate>0.99'],
    order_unexpected_outcome: ['rate<0.01'],
    // Latency: the API answers fast; the saga ends within its objective.
    'http_req_duration{name:POST /orders}': ['p(95)<500', 'p(99)<1000'],
    'http_req_duration{name:GET /orders/{id}}': ['p(95)<300'],
    order_time_to_terminal: ['p(95)<5000'],
  },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};
