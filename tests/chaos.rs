//! Random and half-valid input on many connections at once: the broker must never panic, never
//! send a malformed frame, never leave a connection hanging, and keep serving well-behaved clients.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Broker, RawClient};
use warren_protocol::frame::FRAME_END;

/// xorshift64*: deterministic, dependency-free randomness; each connection gets its own seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const METHODS: &[(u16, u16)] = &[
    (10, 10),
    (10, 11),
    (10, 31),
    (10, 40),
    (10, 50),
    (10, 51),
    (20, 10),
    (20, 20),
    (20, 21),
    (20, 40),
    (20, 41),
    (40, 10),
    (50, 10),
    (50, 20),
    (60, 10),
    (60, 20),
    (60, 40),
    (60, 80),
    (60, 200),
    (85, 10),
    (90, 10),
    (99, 1),
];

/// One frame envelope with a random (often almost valid) payload.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    let frame_type = [1u8, 1, 1, 2, 3, 8, 4][rng.below(7) as usize];
    let channel = rng.below(4) as u16;
    let mut payload = Vec::new();
    if frame_type == 1 {
        let (class_id, method_id) = METHODS[rng.below(METHODS.len() as u64) as usize];
        payload.extend_from_slice(&class_id.to_be_bytes());
        payload.extend_from_slice(&method_id.to_be_bytes());
    }
    let len = rng.below(64) as usize;
    payload.extend(rng.bytes(len));
    let mut frame = vec![frame_type];
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(if rng.below(20) == 0 { 0 } else { FRAME_END });
    frame
}

/// Sends random input after a real handshake and reads until the broker is done with us. Returns
/// the connection.close reply code, if one came.
async fn one_client(broker_addr: std::net::SocketAddr, seed: u64) -> Option<u16> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (mut client, _) = RawClient::handshake(broker_addr, 0).await;
    let mut input = Vec::new();
    if rng.below(4) == 0 {
        let len = rng.below(200) as usize;
        input.extend(rng.bytes(len));
    } else {
        for _ in 0..rng.below(12) + 1 {
            input.extend(random_frame(&mut rng));
        }
    }
    // The broker may hang up before it has read everything: a failed write is fine.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut client.stream, &input).await;
    let mut code = None;
    loop {
        // RawClient::recv panics on a malformed frame from the broker.
        match client.recv_within(Duration::from_secs(5)).await {
            Ok(Some(frame)) => {
                if frame.frame_type == warren_protocol::frame::FrameType::Method
                    && frame.channel == 0
                    && frame.payload.starts_with(&[0, 10, 0, 50])
                {
                    code = Some(u16::from_be_bytes([frame.payload[4], frame.payload[5]]));
                }
            }
            Ok(None) => return code,
            // Input the broker found acceptable: the connection simply stays open.
            Err(()) => return code,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_never_panics_or_hangs_the_broker() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&panics);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let broker = Broker::start().await;
    let mut clients = tokio::task::JoinSet::new();
    for seed in 0..300u64 {
        clients.spawn(one_client(broker.addr, seed));
    }
    let mut codes = std::collections::BTreeMap::new();
    while let Some(done) = clients.join_next().await {
        let code = done.expect("client task");
        *codes.entry(code).or_insert(0) += 1;
    }
    for code in codes.keys().flatten() {
        assert!(
            [501, 502, 503, 504, 505, 530, 540].contains(code),
            "unexpected connection.close code {code}: {codes:?}"
        );
    }
    eprintln!("connection.close codes seen (None: no close): {codes:?}");
    assert!(
        codes.len() > 2,
        "input too tame to exercise anything: {codes:?}"
    );

    broker.assert_serving().await;
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "a panic happened somewhere"
    );
}
