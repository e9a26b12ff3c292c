//! warren-perf: a load generator for AMQP 0-9-1 brokers (being written).

fn main() {
    println!("warren-perf: not implemented yet");
}
