//! Cost of the service edge, printed as figures: Argon2id hashing, JWT verification, and
//! GraphQL-over-HTTP throughput and latency through the whole middleware stack on a real
//! socket (anonymous and with a bearer token, in the same run so their ratio is fair).
//!
//! Run with `cargo bench -p api --bench edge`. Bounded: a few seconds per scenario.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use api::{
    HttpOptions, HttpService, JwtCodec, PasswordHasher, RateLimits, Role, SchemaLimits,
    ServiceConfig, configure_schema,
};
use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
use hdrhistogram::Histogram;
use secrecy::SecretString;
use tokio::net::TcpListener;

struct Query;

#[Object]
impl Query {
    async fn echo(&self, message: String) -> String {
        message
    }
}

const CLIENTS: usize = 32;
const RUN: Duration = Duration::from_secs(4);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        passwords().await;
        jwt();
        http().await;
    });
}

async fn passwords() {
    let hasher = PasswordHasher::new(1);
    let password = SecretString::from("correct horse battery staple");
    let mut hash_ms = Vec::new();
    let mut hash = String::new();
    for _ in 0..15 {
        let started = Instant::now();
        hash = hasher.hash(&password).await.expect("hashes");
        hash_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mut verify_ms = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        assert!(
            hasher
                .verify(&password, Some(&hash))
                .await
                .expect("verifies")
        );
        verify_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "argon2id (m=19 MiB, t=2, p=1): hash median {:.1} ms, verify median {:.1} ms (15 runs each)",
        median(&mut hash_ms),
        median(&mut verify_ms)
    );
}

fn jwt() {
    let codec = JwtCodec::new(
        &SecretString::from("bench-secret-0123456789abcdef0123456789"),
        "ticketing",
        Duration::from_secs(3600),
    );
    let token = codec
        .issue(uuid::Uuid::now_v7(), &[Role::Customer])
        .expect("issues")
        .token;
    let rounds = 200_000;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(codec.verify(std::hint::black_box(&token)).expect("valid"));
    }
    let per = started.elapsed() / rounds;
    println!(
        "jwt verify (HS256): {:.2} µs per token",
        per.as_secs_f64() * 1e6
    );
}

async fn http() {
    let config = ServiceConfig::default();
    let schema = configure_schema(
        Schema::build(Query, EmptyMutation, EmptySubscription),
        SchemaLimits::from_config(&config),
    )
    .finish();
    let jwt = Arc::new(JwtCodec::from_config(&config));
    let token = jwt
        .issue(uuid::Uuid::now_v7(), &[Role::Customer])
        .expect("issues")
        .token;
    let service = HttpService::builder(
        schema,
        Arc::clone(&jwt),
        Arc::new(RateLimits::from_config(&config)),
        HttpOptions::default(),
    )
    .build()
    .expect("builds");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/graphql", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.serve(listener, async move {
        let _ = stop_rx.await;
    }));

    let mut results = Vec::new();
    for (name, token) in [
        ("anonymous", None),
        ("bearer token", Some(token.as_str())),
        ("anonymous (again)", None),
    ] {
        let (requests, histogram) = load(&url, token).await;
        let throughput = requests as f64 / RUN.as_secs_f64();
        println!(
            "POST /graphql {name:>18}: {throughput:>8.0} req/s, latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({CLIENTS} clients, {} s)",
            histogram.value_at_quantile(0.5) as f64 / 1e3,
            histogram.value_at_quantile(0.9) as f64 / 1e3,
            histogram.value_at_quantile(0.99) as f64 / 1e3,
            histogram.max() as f64 / 1e3,
            RUN.as_secs(),
        );
        results.push(throughput);
    }
    println!(
        "throughput ratio bearer / anonymous: {:.2}",
        results[1] / ((results[0] + results[2]) / 2.0)
    );
    let _ = stop_tx.send(());
    server.await.expect("server task").expect("serve");
}

/// `CLIENTS` keep-alive clients posting one small query after another for `RUN`; returns
/// the number of requests and their latencies in microseconds.
async fn load(url: &str, token: Option<&str>) -> (u64, Histogram<u64>) {
    let deadline = Instant::now() + RUN;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.to_owned();
            let token = token.map(str::to_owned);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut histogram = Histogram::<u64>::new(3).expect("histogram");
                let mut count = 0u64;
                let body = serde_json::json!({ "query": "{ echo(message: \"hi\") }" });
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let mut request = client.post(&url).json(&body);
                    if let Some(token) = &token {
                        request = request.bearer_auth(token);
                    }
                    let response = request.send().await.expect("request");
                    assert!(response.status().is_success());
                    let _ = response.bytes().await.expect("body");
                    histogram
                        .record(started.elapsed().as_micros() as u64)
                        .expect("record");
                    count += 1;
                }
                (count, histogram)
            })
        })
        .collect();
    let mut total = 0;
    let mut merged = Histogram::<u64>::new(3).expect("histogram");
    for task in tasks {
        let (count, histogram) = task.await.expect("client task");
        total += count;
        merged.add(histogram).expect("merge");
    }
    (total, merged)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
