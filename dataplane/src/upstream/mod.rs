//! Upstream connection pools, one per backend identity.
//!
//! This is the pool interface the proxy uses: `BackendPool::send` takes a request and returns the
//! backend's response. Endpoint selection is round-robin over ready endpoints. HTTP/1.1 endpoints
//! keep a stack of idle keep-alive connections; HTTP/2 endpoints share one multiplexed connection.

mod connect;
mod error;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

pub use error::{SafetyClass, UpstreamError};

use crate::metrics::ProxyMetrics;
use crate::proxy::body::ProxyBody;
use crate::table::{BackendKey, Protocol};

/// Pool tuning shared by all backends.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            max_idle_per_endpoint: 64,
        }
    }
}

#[derive(Debug)]
pub struct BackendPool {
    key: BackendKey,
    settings: PoolSettings,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    unavailable: ArcSwapOption<String>,
    next: AtomicUsize,
    metrics: ProxyMetrics,
}

impl BackendPool {
    pub(crate) fn new(key: BackendKey, settings: PoolSettings, metrics: ProxyMetrics) -> Self {
        Self {
            key,
            settings,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            unavailable: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            metrics,
        }
    }

    pub fn key(&self) -> &BackendKey {
        &self.key
    }

    /// Replaces the endpoint set, keeping the connections of endpoints that stay.
    pub(crate) fn set_endpoints(&self, addrs: &[SocketAddr], unavailable: Option<&str>) {
        let current = self.endpoints.load();
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|addr| {
                current
                    .iter()
                    .find(|e| e.addr == *addr)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(*addr, self.key.protocol)))
            })
            .collect();
        self.endpoints.store(Arc::new(next));
        self.unavailable
            .store(unavailable.map(|u| Arc::new(u.to_string())));
    }

    /// Why there are no endpoints, if the controller said.
    pub fn unavailable_reason(&self) -> Option<Arc<String>> {
        self.unavailable.load_full()
    }

    fn pick(&self) -> Option<Arc<Endpoint>> {
        let endpoints = self.endpoints.load();
        if endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len();
        Some(endpoints[i].clone())
    }

    /// Sends `req` to the next endpoint. `req` must already be in the upstream's form
    /// (see `proxy::forward`).
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, UpstreamError> {
        let endpoint = self.pick().ok_or(UpstreamError::NoEndpoints)?;
        let result = endpoint.send(req, &self.settings).await;
        if let Err(error) = &result {
            self.metrics
                .upstream_errors
                .with_label_values(&[&self.key.to_string(), error.reason()])
                .inc();
        }
        result
    }
}

#[derive(Debug)]
struct Endpoint {
    addr: SocketAddr,
    conns: Conns,
}

#[derive(Debug)]
enum Conns {
    Http1 {
        idle: Mutex<Vec<http1::SendRequest<ProxyBody>>>,
    },
    H2 {
        shared: ArcSwapOption<http2::SendRequest<ProxyBody>>,
        dialing: tokio::sync::Mutex<()>,
    },
}

impl Endpoint {
    fn new(addr: SocketAddr, protocol: Protocol) -> Self {
        let conns = match protocol {
            Protocol::Http1 => Conns::Http1 {
                idle: Mutex::new(Vec::new()),
            },
            Protocol::H2c => Conns::H2 {
                shared: ArcSwapOption::empty(),
                dialing: tokio::sync::Mutex::new(()),
            },
        };
        Self { addr, conns }
    }

    async fn send(
        self: Arc<Self>,
        req: Request<ProxyBody>,
        settings: &PoolSettings,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match &self.conns {
            Conns::Http1 { .. } => self.send_http1(req, settings).await,
            Conns::H2 { .. } => self.send_h2(req, settings).await,
        }
    }

    fn idle_http1(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let Conns::Http1 { idle } = &self.conns else {
            return None;
        };
        let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn release_http1(self: &Arc<Self>, mut sender: http1::SendRequest<ProxyBody>, max_idle: usize) {
        let endpoint = self.clone();
        // The connection can take another request once this response's body is fully read.
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            if let Conns::Http1 { idle } = &endpoint.conns {
                let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < max_idle {
                    idle.push(sender);
                }
            }
        });
    }

    async fn send_http1(
        self: Arc<Self>,
        mut req: Request<ProxyBody>,
        settings: &PoolSettings,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let addr = self.addr;
        // A pooled connection the backend closed while idle hands the request back unsent:
        // then, and only then, the request goes out again on a fresh connection.
        loop {
            let (mut sender, reused) = match self.idle_http1() {
                Some(sender) => (sender, true),
                None => (connect::http1(addr, settings.connect_timeout).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.release_http1(sender, settings.max_idle_per_endpoint);
                    return Ok(resp);
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) if reused => req = unsent,
                    Some(_) => {
                        return Err(UpstreamError::NotSent {
                            addr,
                            source: err.into_error(),
                        })
                    }
                    None => {
                        return Err(UpstreamError::Request {
                            addr,
                            source: err.into_error(),
                        })
                    }
                },
            }
        }
    }

    async fn h2_sender(
        &self,
        settings: &PoolSettings,
    ) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
        let Conns::H2 { shared, dialing } = &self.conns else {
            unreachable!("h2_sender is only called on HTTP/2 endpoints");
        };
        if let Some(sender) = shared.load().as_ref() {
            if !sender.is_closed() {
                return Ok((**sender).clone());
            }
        }
        // One dial in flight per endpoint; late arrivals reuse its result.
        let _guard = dialing.lock().await;
        if let Some(sender) = shared.load().as_ref() {
            if !sender.is_closed() {
                return Ok((**sender).clone());
            }
        }
        let sender = connect::http2(self.addr, settings.connect_timeout).await?;
        shared.store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    async fn send_h2(
        self: Arc<Self>,
        mut req: Request<ProxyBody>,
        settings: &PoolSettings,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let addr = self.addr;
        let mut fresh_tries = 0;
        loop {
            let mut sender = self.h2_sender(settings).await?;
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut err) => match err.take_message() {
                    // The shared connection closed before our stream was opened: unprocessed.
                    Some(unsent) if fresh_tries == 0 => {
                        fresh_tries += 1;
                        req = unsent;
                    }
                    Some(_) => {
                        return Err(UpstreamError::NotSent {
                            addr,
                            source: err.into_error(),
                        })
                    }
                    None => {
                        return Err(UpstreamError::Request {
                            addr,
                            source: err.into_error(),
                        })
                    }
                },
            }
        }
    }
}
