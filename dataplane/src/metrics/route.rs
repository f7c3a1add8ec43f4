//! Request metrics of one (route, service) pair, with the label lookups done once: the request
//! path increments a counter it already holds instead of hashing label values per request.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

/// Status codes whose counters are kept resolved; any other code is looked up when it occurs.
const COMMON_CODES: [u16; 20] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 409, 429, 500, 502, 503,
    504,
];

/// How a request was answered, as the `code` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    Status(u16),
    /// The client's HTTP/2 stream was reset with REFUSED_STREAM.
    Refused,
}

impl Code {
    pub(crate) fn label(self) -> String {
        match self {
            Code::Status(code) => code.to_string(),
            Code::Refused => "refused-stream".to_string(),
        }
    }
}

/// `weir_requests_total` and `weir_request_duration_seconds` for one route and service. Series
/// are created on first use, as with plain label lookups.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    pub(crate) route: Box<str>,
    pub(crate) service: Arc<str>,
    requests: IntCounterVec,
    durations: HistogramVec,
    duration: OnceLock<Histogram>,
    codes: [OnceLock<IntCounter>; COMMON_CODES.len()],
}

impl RequestMetrics {
    pub(crate) fn new(
        requests: &IntCounterVec,
        durations: &HistogramVec,
        route: &str,
        service: Arc<str>,
    ) -> Self {
        Self {
            route: route.into(),
            service,
            requests: requests.clone(),
            durations: durations.clone(),
            duration: OnceLock::new(),
            codes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn counter(&self, code: Code) -> IntCounter {
        self.requests
            .with_label_values(&[&*self.route, &*self.service, &code.label()])
    }

    /// Counts one answered request and observes its duration.
    pub(crate) fn record(&self, code: Code, elapsed: Duration) {
        self.duration
            .get_or_init(|| {
                self.durations
                    .with_label_values(&[&*self.route, &*self.service])
            })
            .observe(elapsed.as_secs_f64());
        let common = match code {
            Code::Status(status) => COMMON_CODES.iter().position(|&c| c == status),
            Code::Refused => None,
        };
        match common {
            Some(i) => self.codes[i].get_or_init(|| self.counter(code)).inc(),
            None => self.counter(code).inc(),
        }
    }
}

/// The request metrics of the routes that send traffic to one backend, found by route name.
/// A backend serves few routes, so a short list is searched; it only grows when a route sends
/// its first request, and lives as long as the backend's pool.
#[derive(Debug)]
pub(crate) struct RouteCache {
    requests: IntCounterVec,
    durations: HistogramVec,
    service: Arc<str>,
    routes: RwLock<Vec<Arc<RequestMetrics>>>,
}

impl RouteCache {
    pub(crate) fn new(
        requests: &IntCounterVec,
        durations: &HistogramVec,
        service: Arc<str>,
    ) -> Self {
        Self {
            requests: requests.clone(),
            durations: durations.clone(),
            service,
            routes: RwLock::new(Vec::new()),
        }
    }

    fn find(list: &[Arc<RequestMetrics>], route: &str) -> Option<Arc<RequestMetrics>> {
        list.iter().find(|m| &*m.route == route).cloned()
    }

    pub(crate) fn get(&self, route: &str) -> Arc<RequestMetrics> {
        {
            let list = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(found) = Self::find(&list, route) {
                return found;
            }
        }
        let mut list = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = Self::find(&list, route) {
            return found;
        }
        let created = Arc::new(RequestMetrics::new(
            &self.requests,
            &self.durations,
            route,
            self.service.clone(),
        ));
        list.push(created.clone());
        created
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, Opts};

    fn vecs() -> (IntCounterVec, HistogramVec) {
        let requests =
            IntCounterVec::new(Opts::new("r", "r"), &["route", "service", "code"]).unwrap();
        let durations =
            HistogramVec::new(HistogramOpts::new("d", "d"), &["route", "service"]).unwrap();
        (requests, durations)
    }

    #[test]
    fn counts_common_and_rare_codes_under_the_same_labels() {
        let (requests, durations) = vecs();
        let cache = RouteCache::new(&requests, &durations, "ns/svc:80".into());
        let m = cache.get("ns/ing");
        m.record(Code::Status(200), Duration::from_millis(1));
        cache
            .get("ns/ing")
            .record(Code::Status(200), Duration::ZERO);
        m.record(Code::Status(418), Duration::ZERO);
        m.record(Code::Refused, Duration::ZERO);
        let count = |code: &str| {
            requests
                .with_label_values(&["ns/ing", "ns/svc:80", code])
                .get()
        };
        assert_eq!(count("200"), 2);
        assert_eq!(count("418"), 1);
        assert_eq!(count("refused-stream"), 1);
        let h = durations.with_label_values(&["ns/ing", "ns/svc:80"]);
        assert_eq!(h.get_sample_count(), 4);
        assert!(Arc::ptr_eq(&cache.get("ns/ing"), &m));
        assert!(!Arc::ptr_eq(&cache.get("ns/other"), &m));
    }
}
