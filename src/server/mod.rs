//! The gRPC server: grpcio on a unix socket (or loopback TCP for
//! debugging). Every call that may wait on I/O is handed to the worker
//! [`Pool`]; identity, capabilities and Probe, answered from memory, are
//! answered on grpcio's completion-queue thread.

mod dispatch;
mod self_probe;

pub use crate::endpoint::{Endpoint, SOCKET_MODE};
pub use dispatch::{Answer, Job, Pool, Refused, Rejection};
pub use self_probe::SelfProbe;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use grpcio::{
    Deadline, Environment, GrpcSlice, Marshaller, MessageReader, Method, MethodType, RpcContext,
    RpcStatus, RpcStatusCode, ServerBuilder, ServerCredentials, ServiceBuilder, UnarySink,
};
use protobuf::Message;

use crate::{
    csi::{self, CallSubject, CsiError, Runs},
    driver::Driver,
};

/// Server tunables (`--workers`, `--queue-depth`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub endpoint: Endpoint,
    pub workers: usize,
    pub queue_depth: usize,
}

/// A bound, started server.
pub struct Server {
    grpc: grpcio::Server,
    pool: Arc<Pool>,
    endpoint: Endpoint,
}

impl Server {
    /// Binds and starts serving `driver`. A stale socket file is removed
    /// first; a live server on it, or a bind failure, is an error.
    pub fn start(driver: Arc<Driver>, opts: &ServeOptions) -> Result<Server, String> {
        if let Endpoint::Unix(path) = &opts.endpoint {
            crate::endpoint::clear_stale_socket(path)?;
        }
        let pool = Arc::new(Pool::new(opts.workers, opts.queue_depth));
        let handlers = Handlers {
            driver,
            pool: pool.clone(),
        };
        let env = Arc::new(Environment::new(1));
        let mut grpc = ServerBuilder::new(env)
            .register_service(handlers.service())
            .build()
            .map_err(|e| format!("building the gRPC server: {e}"))?;
        grpc.add_listening_port(opts.endpoint.grpc_address(), ServerCredentials::insecure())
            .map_err(|e| format!("cannot listen on {}: {e}", opts.endpoint))?;
        if let Endpoint::Unix(path) = &opts.endpoint {
            crate::endpoint::set_socket_mode(path)
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        }
        grpc.start();
        log::info!(
            "serving CSI on {} ({} workers, queue {})",
            opts.endpoint,
            opts.workers,
            opts.queue_depth
        );
        Ok(Server {
            grpc,
            pool,
            endpoint: opts.endpoint.clone(),
        })
    }

    /// The worker pool (for its queue depth).
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Stops taking calls, lets calls in flight finish within `grace`,
    /// cancels what is left, and removes the socket file.
    pub fn shutdown(self, grace: Duration) {
        let Server {
            mut grpc,
            pool,
            endpoint,
        } = self;
        let started = Instant::now();
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let finished = grpc.shutdown();
        std::thread::spawn(move || {
            let _ = futures_executor::block_on(finished);
            let _ = done_tx.send(());
        });
        if done_rx.recv_timeout(grace).is_err() {
            log::warn!("calls still in flight after {grace:?}; cancelling them");
            grpc.cancel_all_calls();
            let _ = done_rx.recv_timeout(Duration::from_secs(1));
        }
        // The service's handlers hold the other references to the pool;
        // grpcio's completion-queue threads let go of them as they wind
        // down after the server is dropped, not necessarily before `drop`
        // returns: wait for that within what is left of the grace.
        drop(grpc);
        let left = grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(100));
        let deadline = Instant::now() + left;
        let mut pool = pool;
        let owned = loop {
            match Arc::try_unwrap(pool) {
                Ok(p) => break Some(p),
                Err(p) if Instant::now() < deadline => {
                    pool = p;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break None,
            }
        };
        match owned {
            Some(pool) => {
                let rest = deadline.saturating_duration_since(Instant::now());
                if !pool.shutdown(rest.max(Duration::from_millis(100))) {
                    log::warn!("workers still busy after the grace period");
                }
            }
            None => log::warn!("worker pool still referenced at shutdown"),
        }
        if let Endpoint::Unix(path) = &endpoint {
            match std::fs::remove_file(path) {
                // grpcio may have removed it already.
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    log::warn!("removing {}: {e}", path.display())
                }
                _ => {}
            }
        }
        log::info!("server stopped");
    }
}

#[derive(Clone)]
struct Handlers {
    driver: Arc<Driver>,
    pool: Arc<Pool>,
}

/// One unary call on its way through the pool.
struct UnaryJob<Req, Resp> {
    method: &'static str,
    req: Req,
    sink: UnarySink<Resp>,
    deadline: Deadline,
    received: Instant,
    driver: Arc<Driver>,
    work: fn(&Driver, &Req) -> Result<Resp, CsiError>,
}

impl<Req: CallSubject + Send + 'static, Resp: Send + 'static> Job for UnaryJob<Req, Resp> {
    fn expired(&self) -> bool {
        self.deadline.exceeded()
    }

    fn run(self: Box<Self>) {
        let UnaryJob {
            method,
            req,
            sink,
            deadline,
            received,
            driver,
            work,
        } = *self;
        driver.metrics().worker_wait(method, received.elapsed());
        // Everything the call does stops at the caller's deadline.
        let call = crate::deadline::Deadline::for_call(
            received,
            Some(Arc::new(move || deadline.exceeded())),
        );
        let answer = crate::deadline::within(call, || {
            respond(method, &req, sink, received, &driver, work)
        });
        // Drive the send to completion so a vanished caller is noticed.
        if let Err(e) = futures_executor::block_on(answer) {
            log::debug!("{method}: answer not delivered: {e}");
        }
    }

    fn reject(self: Box<Self>, why: Rejection) -> Answer {
        self.driver.metrics().rejected(match why {
            Rejection::QueueFull => "queue_full",
            Rejection::DeadlineExceeded => "deadline",
            Rejection::ShuttingDown => "shutting_down",
        });
        let (code, message) = match why {
            Rejection::QueueFull => (
                RpcStatusCode::RESOURCE_EXHAUSTED,
                "too many calls in progress; retry later",
            ),
            Rejection::DeadlineExceeded => (
                RpcStatusCode::DEADLINE_EXCEEDED,
                "deadline passed before the call could start",
            ),
            Rejection::ShuttingDown => (
                RpcStatusCode::UNAVAILABLE,
                "the controller is shutting down",
            ),
        };
        self.driver
            .metrics()
            .operation(self.method, code_name(code), self.received.elapsed());
        let (volume, node) = self.req.subject();
        log::debug!(
            "{} volume={volume:?} node={node:?} code={code:?} duration={:?}: {message}",
            self.method,
            self.received.elapsed()
        );
        let answer = self
            .sink
            .fail(RpcStatus::with_message(code, message.into()));
        Box::pin(async move {
            let _ = answer.await;
        })
    }
}

/// Does the work of one call and starts its answer, with its metrics and
/// log line.
fn respond<Req: CallSubject, Resp>(
    method: &'static str,
    req: &Req,
    sink: UnarySink<Resp>,
    received: Instant,
    driver: &Driver,
    work: fn(&Driver, &Req) -> Result<Resp, CsiError>,
) -> grpcio::UnarySinkResult {
    let result = work(driver, req);
    let (volume, node) = req.subject();
    match result {
        Ok(resp) => {
            driver.metrics().operation(method, "OK", received.elapsed());
            log::debug!(
                "{method} volume={volume:?} node={node:?} code=OK duration={:?}",
                received.elapsed()
            );
            sink.success(resp)
        }
        Err(e) => {
            let status = e.to_status();
            driver
                .metrics()
                .operation(method, code_name(status.code()), received.elapsed());
            log::debug!(
                "{method} volume={volume:?} node={node:?} code={:?} duration={:?}: {}",
                status.code(),
                received.elapsed(),
                status.message()
            );
            sink.fail(status)
        }
    }
}

impl Handlers {
    fn submit<Req: CallSubject + Send + 'static, Resp: Send + 'static>(
        &self,
        method: &'static str,
        ctx: &RpcContext<'_>,
        req: Req,
        sink: UnarySink<Resp>,
        work: fn(&Driver, &Req) -> Result<Resp, CsiError>,
    ) {
        let job = Box::new(UnaryJob {
            method,
            req,
            sink,
            deadline: ctx.deadline(),
            received: Instant::now(),
            driver: self.driver.clone(),
            work,
        });
        if let Err(Refused { job, why }) = self.pool.submit(job) {
            // On the completion-queue thread: the answer is driven there,
            // never waited for (dropping it could cancel the call instead).
            ctx.spawn(job.reject(why));
        }
    }
}

impl Handlers {
    /// The CSI methods this driver serves: every one [`csi::rpcs::table`]
    /// routes. Methods not listed there are answered UNIMPLEMENTED by gRPC
    /// itself.
    fn service(self) -> grpcio::Service {
        struct Register {
            handlers: Handlers,
            /// Taken and put back by each route (its methods consume it).
            builder: Option<ServiceBuilder>,
        }
        impl csi::Router for Register {
            fn route<Req, Resp>(
                &mut self,
                rpc: &'static csi::RpcInfo,
                work: fn(&Driver, &Req) -> Result<Resp, CsiError>,
            ) where
                Req: Message + CallSubject + Send + 'static,
                Resp: Message + Send + 'static,
            {
                let b = self.builder.take().expect("service builder");
                self.builder = Some(
                    self.handlers
                        .route_to(b, rpc.path, rpc.name, rpc.runs, work),
                );
            }
        }
        let mut r = Register {
            handlers: self,
            builder: Some(ServiceBuilder::new()),
        };
        csi::rpcs::table(&mut r);
        r.builder.take().expect("service builder").build()
    }

    fn route_to<Req, Resp>(
        &self,
        builder: ServiceBuilder,
        path: &'static str,
        name: &'static str,
        runs: Runs,
        work: fn(&Driver, &Req) -> Result<Resp, CsiError>,
    ) -> ServiceBuilder
    where
        Req: Message + CallSubject,
        Resp: Message,
    {
        let method: Method<Vec<u8>, Resp> = Method {
            ty: MethodType::Unary,
            name: path,
            req_mar: Marshaller {
                ser: raw_ser,
                de: raw_de,
            },
            resp_mar: Marshaller {
                ser: grpcio::pb_ser,
                de: grpcio::pb_de,
            },
        };
        let handlers = self.clone();
        builder.add_unary_handler(
            &method,
            move |ctx, bytes: Vec<u8>, sink: UnarySink<Resp>| {
                match (Req::parse_from_bytes(&bytes), runs) {
                    (Ok(req), Runs::InPool) => handlers.submit(name, &ctx, req, sink, work),
                    (Ok(req), Runs::Inline) => {
                        let answer =
                            respond(name, &req, sink, Instant::now(), &handlers.driver, work);
                        ctx.spawn(async move {
                            let _ = answer.await;
                        });
                    }
                    (Err(e), _) => {
                        log::debug!("{name}: undecodable request ({} bytes): {e}", bytes.len());
                        let status = RpcStatus::with_message(
                            RpcStatusCode::INVALID_ARGUMENT,
                            format!("request is not a valid {name} message: {e}"),
                        );
                        // On the completion-queue thread: driven there, never waited for.
                        let answer = sink.fail(status);
                        ctx.spawn(async move {
                            let _ = answer.await;
                        });
                    }
                }
            },
        )
    }
}

/// A gRPC code as a metrics label.
fn code_name(code: RpcStatusCode) -> &'static str {
    use RpcStatusCode as C;
    match code {
        C::OK => "OK",
        C::CANCELLED => "CANCELLED",
        C::INVALID_ARGUMENT => "INVALID_ARGUMENT",
        C::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        C::NOT_FOUND => "NOT_FOUND",
        C::ALREADY_EXISTS => "ALREADY_EXISTS",
        C::PERMISSION_DENIED => "PERMISSION_DENIED",
        C::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
        C::FAILED_PRECONDITION => "FAILED_PRECONDITION",
        C::ABORTED => "ABORTED",
        C::OUT_OF_RANGE => "OUT_OF_RANGE",
        C::UNIMPLEMENTED => "UNIMPLEMENTED",
        C::INTERNAL => "INTERNAL",
        C::UNAVAILABLE => "UNAVAILABLE",
        C::DATA_LOSS => "DATA_LOSS",
        C::UNAUTHENTICATED => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

fn raw_de(mut reader: MessageReader) -> grpcio::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(reader.len());
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(bytes)
}

// The signature is grpcio's `SerializeFn<Vec<u8>>`.
#[allow(clippy::ptr_arg)]
fn raw_ser(bytes: &Vec<u8>, buf: &mut GrpcSlice) -> grpcio::Result<()> {
    *buf = GrpcSlice::from(bytes.clone());
    Ok(())
}
