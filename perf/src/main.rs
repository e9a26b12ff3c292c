//! warren-perf: a load generator for AMQP 0-9-1 brokers, in the spirit of RabbitMQ's PerfTest.
//!
//! The run: plan the topology ([`topology`]), declare it, connect consumers ([`consumer`] with
//! lapin, or [`raw_consumer`] frames) and producers ([`producer`] with lapin, or [`raw`] frames),
//! start the clock, publish for `--time` or `--count` (with `--backlog`, connect the consumers
//! only now), wait for consumers to drain, then report rates, latency, loss, CPU and broker memory
//! ([`report`], [`cpu`]). All counting lives in [`stats`].

mod cli;
mod consumer;
mod cpu;
mod message;
mod producer;
mod raw;
mod raw_consumer;
mod report;
mod stats;
mod topology;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use cli::Args;
use message::Clock;
use producer::{Job, Producer};
use raw::RawProducer;
use raw_consumer::RawConsumer;
use report::{median, Rate, Summary};
use stats::Shared;
use topology::Topology;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.check() {
        eprintln!("warren-perf: {e}");
        return ExitCode::from(2);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores).max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren-perf: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.clone(), cores, threads)) {
        Ok(summary) => {
            if args.json {
                println!("{}", summary.to_json());
            } else {
                summary.print_text();
            }
            let clean = summary.errors.is_empty()
                && summary.lost.unwrap_or(0) == 0
                && summary.duplicates == 0
                && summary.misrouted == 0;
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("warren-perf: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Publisher {
    Lapin(Box<Producer>),
    Raw(Box<RawProducer>),
}

impl Publisher {
    async fn run(
        self,
        shared: Arc<Shared>,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Result<(), String> {
        match self {
            Publisher::Lapin(p) => (*p).run(shared, start, deadline).await,
            Publisher::Raw(p) => (*p).run(shared, start, deadline).await,
        }
    }
}

enum Subscriber {
    Lapin(Box<consumer::Consumer>),
    Raw(Box<RawConsumer>),
}

impl Subscriber {
    async fn connect(uri: String, raw: bool, settings: consumer::Settings) -> Result<Self, String> {
        if raw {
            RawConsumer::connect(&uri, settings)
                .await
                .map(|c| Subscriber::Raw(Box::new(c)))
        } else {
            consumer::Consumer::connect(&uri, settings)
                .await
                .map(|c| Subscriber::Lapin(Box::new(c)))
        }
    }

    async fn run(self, shared: Arc<Shared>, stop: watch::Receiver<bool>) -> Result<(), String> {
        match self {
            Subscriber::Lapin(c) => (*c).run(shared, stop).await,
            Subscriber::Raw(c) => (*c).run(shared, stop).await,
        }
    }
}

/// Connects every consumer.
async fn connect_consumers(args: &Args, topology: &Topology) -> Result<Vec<Subscriber>, String> {
    connect_all(
        (0..args.consumers)
            .map(|id| {
                let queue = topology.consumer_queue[id];
                let tracker = topology.consumer_tracker[id];
                let settings = consumer::Settings {
                    id,
                    queue: tracker,
                    queue_name: topology.queues[queue].clone(),
                    auto_ack: args.auto_ack,
                    multi_ack_every: args.multi_ack_every,
                    qos: args.qos,
                    routed: topology.expected[tracker].clone(),
                    arguments: topology::field_table(&args.consume_args),
                };
                Subscriber::connect(args.uri.clone(), args.raw_consume, settings)
            })
            .collect(),
    )
    .await
}

/// Samples the broker's RSS every 200 ms until `stop`; returns the largest sample.
async fn sample_rss(pid: u32, mut stop: watch::Receiver<bool>) -> Option<u64> {
    let mut peak = cpu::status_kib(pid, "VmRSS");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return peak,
        }
        peak = peak.max(cpu::status_kib(pid, "VmRSS"));
    }
}

/// Waits for every task; returns the errors.
async fn join_all(handles: Vec<JoinHandle<Result<(), String>>>) -> Vec<String> {
    let mut errors = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("task failed: {e}")),
        }
    }
    errors
}

/// Connects everything concurrently; the first error wins.
async fn connect_all<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = Result<T, String>> + Send + 'static>,
) -> Result<Vec<T>, String> {
    let handles: Vec<JoinHandle<Result<T, String>>> =
        futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.map_err(|e| format!("connect task: {e}"))??);
    }
    Ok(out)
}

fn jobs(args: &Args, topology: &Topology) -> Vec<Job> {
    (0..args.producers)
        .map(|id| {
            let mut properties = BasicProperties::default();
            if args.persistent {
                properties = properties.with_delivery_mode(2);
            }
            if let Some(headers) = topology.header_table(id) {
                properties = properties.with_headers(headers);
            }
            Job {
                id,
                exchange: topology.exchange.clone(),
                routing_key: topology.routing_keys[id].clone(),
                properties,
                size: args.size as usize,
                count: args.count,
                rate: args.rate,
                phase: if args.rate > 0.0 {
                    id as f64 / args.producers as f64 / args.rate
                } else {
                    0.0
                },
                confirm: args.confirm,
                raw_batch: args.raw_batch,
                confirm_grace: Duration::from_secs_f64(args.drain.max(1.0)),
            }
        })
        .collect()
}

/// Messages ready in the consumed queues (passive declares), if the broker tells.
async fn queued(channel: &Channel, topology: &Topology) -> Option<u64> {
    let mut total = 0u64;
    for (q, name) in topology.queues.iter().enumerate() {
        if !topology.consumer_queue.contains(&q) {
            continue;
        }
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = channel
            .queue_declare(name.as_str().into(), options, FieldTable::default())
            .await
            .ok()?;
        total += u64::from(queue.message_count());
    }
    Some(total)
}

/// How long deliveries must have stopped, with no message ready in the queues, before the run
/// counts as drained with messages missing. "Ready" leaves out messages already handed to a
/// consumer's channel but not yet on the wire (RabbitMQ can hold up to the prefetch per consumer
/// there, and pause for over a second when the machine is saturated), so one second was too short.
const STALL: Duration = Duration::from_secs(3);

/// Outcome of waiting for the consumers after the producers stopped.
struct Drain {
    drained: bool,
    seconds: f64,
    missing: u64,
    queued: Option<u64>,
}

/// Waits until every expected message arrived, or the broker has nothing left to deliver (no
/// delivery for a second and the queues are empty), or `limit` passes.
async fn drain(shared: &Shared, topology: &Topology, channel: &Channel, limit: Duration) -> Drain {
    let began = Instant::now();
    let mut last_count = shared.received.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    let mut queued_now = None;
    loop {
        let missing = shared.missing(&topology.expected);
        let done = |drained, queued| Drain {
            drained,
            seconds: began.elapsed().as_secs_f64(),
            missing,
            queued,
        };
        if missing == 0 {
            return done(true, Some(0));
        }
        if began.elapsed() >= limit {
            let queued = queued(channel, topology).await;
            // Nothing left on the broker and nothing arriving: what is missing is lost.
            let stalled = last_progress.elapsed() >= STALL;
            return done(stalled && queued == Some(0), queued.or(queued_now));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let count = shared.received.load(Ordering::Relaxed);
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= STALL {
            queued_now = queued(channel, topology).await;
            if queued_now == Some(0) && shared.received.load(Ordering::Relaxed) == last_count {
                let missing = shared.missing(&topology.expected);
                return Drain {
                    drained: true,
                    seconds: began.elapsed().as_secs_f64(),
                    missing,
                    queued: Some(0),
                };
            }
            last_progress = Instant::now();
        }
    }
}

async fn run(args: Args, cores: usize, threads: usize) -> Result<Summary, String> {
    let topology = Topology::plan(&args);
    for w in &topology.warnings {
        eprintln!("warren-perf: warning: {w}");
    }
    let shared = Arc::new(Shared::new(
        Clock::new(),
        args.producers,
        args.consumers,
        topology.expected.len(),
    ));

    let setup = Connection::connect(&args.uri, ConnectionProperties::default())
        .await
        .map_err(|e| format!("connect {}: {e}", args.uri))?;
    let setup_channel = setup
        .create_channel()
        .await
        .map_err(|e| format!("channel.open: {e}"))?;
    if !args.predeclared {
        topology.declare(&setup_channel, args.durable).await?;
    }

    let rss = |field| args.broker_pid.and_then(|pid| cpu::status_kib(pid, field));
    let rss_before_connect = rss("VmRSS");
    // With --backlog the consumers attach after publishing.
    let consumers = if args.backlog {
        Vec::new()
    } else {
        connect_consumers(&args, &topology).await?
    };
    let publishers = connect_all(
        jobs(&args, &topology)
            .into_iter()
            .map(|job| {
                let uri = args.uri.clone();
                let raw = args.raw;
                async move {
                    if raw {
                        RawProducer::connect(&uri, job)
                            .await
                            .map(|p| Publisher::Raw(Box::new(p)))
                    } else {
                        Producer::connect(&uri, job)
                            .await
                            .map(|p| Publisher::Lapin(Box::new(p)))
                    }
                }
            })
            .collect(),
    )
    .await?;

    let connections = publishers.len() + consumers.len();
    let rss_connected = if args.broker_pid.is_some() && connections > 0 {
        // Let the broker finish setting the connections up before looking.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss("VmRSS")
    } else {
        rss_before_connect
    };
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shared.stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let (stop_consumers, consumers_stop) = watch::channel(false);
    let mut consumer_tasks: Vec<_> = consumers
        .into_iter()
        .map(|c| tokio::spawn(c.run(shared.clone(), consumers_stop.clone())))
        .collect();

    // The clock starts now: everything is connected and consuming.
    let machine_before = cpu::machine_jiffies();
    let threads_before = cpu::threads();
    let tool_before = cpu::process_cpu(None);
    let broker_before = args.broker_pid.and_then(|pid| cpu::process_cpu(Some(pid)));
    let start = Instant::now();
    let start_ns = shared.clock.now();
    let deadline = args.duration().map(|d| start + d);
    let (stop_reporter, reporter_stop) = watch::channel(false);
    let sampler = args
        .broker_pid
        .map(|pid| tokio::spawn(sample_rss(pid, reporter_stop.clone())));
    let reporter = tokio::spawn(report::progress(
        shared.clone(),
        start,
        args.json,
        reporter_stop,
    ));
    let producer_tasks = publishers
        .into_iter()
        .map(|p| tokio::spawn(p.run(shared.clone(), start, deadline)))
        .collect();
    let mut errors = join_all(producer_tasks).await;
    if args.producers == 0 {
        // Consume-only: run for --time (or until Ctrl-C).
        while deadline.is_none_or(|d| Instant::now() < d) && !shared.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let rss_after_publish = rss("VmRSS");
    let mut consume_start_ns = start_ns;
    // With --backlog: the broker's CPU, I/O counters and RSS over the drain alone.
    let mut drain_before = None;
    let (stop_drain_sampler, drain_sampler_stop) = watch::channel(false);
    let mut drain_sampler = None;
    if args.backlog && !shared.stop.load(Ordering::Relaxed) {
        match connect_consumers(&args, &topology).await {
            Ok(consumers) => {
                consume_start_ns = shared.clock.now();
                drain_before = args
                    .broker_pid
                    .map(|pid| (cpu::process_cpu(Some(pid)), cpu::io(pid)));
                drain_sampler = args
                    .broker_pid
                    .map(|pid| tokio::spawn(sample_rss(pid, drain_sampler_stop.clone())));
                // A marker for scripts that look at the broker during the drain (strace).
                eprintln!("warren-perf: backlog published, consumers attached: draining");
                consumer_tasks.extend(
                    consumers
                        .into_iter()
                        .map(|c| tokio::spawn(c.run(shared.clone(), consumers_stop.clone()))),
                );
            }
            Err(e) => errors.push(e),
        }
    }

    let drain_limit = Duration::from_secs_f64(args.drain);
    let drained = drain(&shared, &topology, &setup_channel, drain_limit).await;
    let drain_phase = match (args.broker_pid, drain_before) {
        (Some(pid), Some((cpu_before, io_before))) => {
            let _ = stop_drain_sampler.send(true);
            let rss_peak = match drain_sampler {
                Some(s) => s.await.ok().flatten(),
                None => None,
            };
            Some(report::DrainPhase {
                broker_cpu: cpu_before
                    .zip(cpu::process_cpu(Some(pid)))
                    .map(|(a, b)| b - a),
                io: io_before.zip(cpu::io(pid)).map(|(a, b)| b.since(&a)),
                rss_peak_kib: rss_peak,
            })
        }
        _ => None,
    };

    let wall = start.elapsed().as_secs_f64();
    let tool_after = cpu::process_cpu(None);
    let threads_after = cpu::threads();
    let machine_busy = cpu::machine_busy(machine_before, cpu::machine_jiffies());
    let broker_after = args.broker_pid.and_then(|pid| cpu::process_cpu(Some(pid)));
    let _ = stop_reporter.send(true);
    let (samples, latency) = reporter.await.map_err(|e| format!("reporter task: {e}"))?;
    let rss_run_peak = match sampler {
        Some(sampler) => sampler.await.ok().flatten(),
        None => None,
    };
    let _ = stop_consumers.send(true);
    errors.extend(join_all(consumer_tasks).await);
    let _ = setup.close(200, "done".into()).await;
    errors.extend(stats::lock(&shared.errors).drain(..));

    // Windows: publishing ends when the last producer stops; consuming at the last delivery.
    let publish_end = shared
        .producers
        .iter()
        .map(|p| p.finished_at.load(Ordering::Relaxed))
        .max()
        .unwrap_or(start_ns)
        .max(start_ns);
    let publish_seconds = (publish_end - start_ns) as f64 / 1e9;
    // ... and was accepted when the broker had processed the last publish (its close-ok).
    let accepted_seconds = shared
        .producers
        .iter()
        .map(|p| p.accepted_at.load(Ordering::Relaxed))
        .try_fold(start_ns, |end, at| (at > 0).then_some(end.max(at)))
        .filter(|_| args.producers > 0)
        .map(|end| (end - start_ns) as f64 / 1e9);
    let last_receive = shared
        .last_receive
        .load(Ordering::Relaxed)
        .max(consume_start_ns);
    let consume_seconds = (last_receive - consume_start_ns) as f64 / 1e9;
    let sent = shared.sent();
    let confirmed = shared.confirmed();
    let received = shared.received.load(Ordering::Relaxed);
    // Medians over the full seconds while producers were running.
    let steady: Vec<_> = samples.iter().filter(|s| s.at <= publish_end).collect();
    let rate = |field: fn(&report::Sample) -> f64, count: u64, window: f64| {
        let overall = count as f64 / window.max(1e-9);
        Rate {
            median: median(steady.iter().map(|s| field(s)).collect()).unwrap_or(overall),
            overall,
        }
    };
    // With --backlog the consumers ran after the producers: their median is over the full
    // seconds of the drain instead.
    let draining: Vec<f64> = samples
        .iter()
        .filter(|s| s.at > consume_start_ns + 1_000_000_000 && s.at <= last_receive)
        .map(|s| s.received)
        .collect();
    let (duplicates, misrouted) = shared.duplicates_and_misrouted();
    let (busiest, share, active) = cpu::busiest_thread(&threads_before, &threads_after, wall);
    let tool_cpu = tool_before.zip(tool_after).map(|(a, b)| b - a);
    let broker_cpu = broker_before.zip(broker_after).map(|(a, b)| b - a);
    let publish = rate(|s| s.sent, sent, publish_seconds);
    let bottleneck = bottleneck(
        &args,
        publish.overall,
        tool_cpu,
        machine_busy,
        share,
        wall,
        cores,
    );
    let (exchange, kind) = args.exchange();
    let settings = json!({
        "uri_host": args.uri.rsplit('@').next().unwrap_or_default(),
        "producers": args.producers,
        "consumers": args.consumers,
        "size": args.size,
        "time": args.duration().map(|d| d.as_secs_f64()),
        "count": args.count,
        "exchange": exchange,
        "type": kind.map(|k| k.name()),
        "queues": args.queues,
        "bindings": topology.bindings.len(),
        "persistent": args.persistent,
        "durable": args.durable,
        "confirm": args.confirm,
        "auto_ack": args.auto_ack,
        "multi_ack_every": args.multi_ack_every,
        "qos": args.qos,
        "rate": args.rate,
        "publisher": if args.raw { "raw" } else { "lapin" },
        "consumer": if args.raw_consume { "raw" } else { "lapin" },
        "backlog": args.backlog,
        "queue_args": args.queue_args,
        "consume_args": args.consume_args,
        "stream": topology.stream,
        "threads": threads,
    });
    Ok(Summary {
        settings,
        publish_seconds,
        accepted_seconds,
        consume_seconds,
        sent,
        confirmed,
        nacked: shared.nacked(),
        received,
        publish,
        confirm: rate(|s| s.confirmed, confirmed, publish_seconds),
        consume: if args.backlog {
            let overall = received as f64 / consume_seconds.max(1e-9);
            Rate {
                median: median(draining).unwrap_or(overall),
                overall,
            }
        } else {
            rate(|s| s.received, received, consume_seconds)
        },
        latency: [
            latency.quantile(0.5),
            latency.quantile(0.95),
            latency.quantile(0.99),
            latency.max(),
        ],
        latency_count: latency.count(),
        drained: drained.drained,
        drain_seconds: drained.seconds,
        missing: drained.missing,
        queued_at_end: drained.queued,
        lost: drained.drained.then_some(drained.missing),
        duplicates,
        misrouted,
        foreign: shared.foreign.load(Ordering::Relaxed),
        redelivered: shared.redelivered.load(Ordering::Relaxed),
        wall_seconds: wall,
        tool_cpu,
        busiest_thread: (busiest, share),
        active_threads: active,
        broker_cpu,
        machine_busy,
        broker_peak_rss_kib: args.broker_pid.and_then(|p| cpu::status_kib(p, "VmHWM")),
        broker_rss_kib: args.broker_pid.and_then(|p| cpu::status_kib(p, "VmRSS")),
        memory: report::Memory {
            connections,
            rss_before_connect_kib: rss_before_connect,
            rss_connected_kib: rss_connected,
            rss_after_publish_kib: rss_after_publish,
            rss_run_peak_kib: rss_run_peak,
        },
        drain_phase,
        cores,
        bottleneck,
        errors,
    })
}

/// Which side limited the run: the rate limit, the tool (a thread at ~100% of a core, or all
/// cores busy with the tool), or else the broker; notes when the machine's cores are all busy
/// (tool, broker and anything else running), which makes either verdict soft.
fn bottleneck(
    args: &Args,
    publish_rate: f64,
    tool_cpu: Option<f64>,
    machine_busy: Option<f64>,
    busiest_share: f64,
    wall: f64,
    cores: usize,
) -> String {
    let target = args.rate * args.producers as f64;
    if args.rate > 0.0 && publish_rate >= 0.97 * target {
        return format!("rate-limited (target {target:.0} msg/s reached)");
    }
    let tool_cores = tool_cpu.map_or(0.0, |c| c / wall.max(1e-9));
    let mut verdict = if busiest_share >= 0.9 || tool_cores >= 0.9 * cores as f64 {
        format!(
            "client-bound (busiest tool thread at {:.0}% of a core, tool uses {tool_cores:.2} cores)",
            busiest_share * 100.0
        )
    } else {
        format!(
            "broker-bound (busiest tool thread at {:.0}% of a core, tool uses {tool_cores:.2} cores)",
            busiest_share * 100.0
        )
    };
    if let Some(busy) = machine_busy.filter(|b| *b >= 0.9) {
        verdict.push_str(&format!(
            "; machine saturated: {:.0}% of {cores} cores busy",
            busy * 100.0
        ));
    }
    verdict
}
