//! Resolve throughput, memory per node and watch fan-out with 100k nodes in 1k networks.
//!
//! `cargo bench -p canopy-manager --bench resolve -- --warm-up-time 1 --measurement-time 3`
//!
//! Everything runs in-process: requests go through the real axum router with tower's
//! `oneshot` (routing, extractors, auth, JSON), not over TCP, with `CONCURRENCY` requests in
//! flight on a 2-worker tokio runtime. The store is a SQLite file in a temp dir; networks,
//! subnets and nodes are inserted in one store transaction (hosts, tenant and the edge
//! through the API, because their credentials are needed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use manager::{AppState, SubstratePrefix};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio_stream::StreamExt;
use tower::ServiceExt;

const ADMIN: &str = "bench-admin-token";
const NETWORKS: u32 = 1_000;
const NODES_PER_NETWORK: u32 = 100;
const HOSTS: usize = 100;
const WATCHERS: usize = 100;
const CONCURRENCY: u64 = 32;

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn call(app: &Router, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    store: manager::Store,
    agents: Vec<String>,
    networks: Vec<String>,
    edge_id: String,
}

async fn setup() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("bench.db").display());
    let store = manager::open(&url).await.unwrap();
    let (state, _) = AppState::new(
        store.clone(),
        Some(ADMIN.into()),
        SubstratePrefix::DEFAULT.parse().unwrap(),
    )
    .await
    .unwrap();
    let app = manager::router(state);
    let t0 = Instant::now();
    let rss0 = rss_bytes();
    let tenant = call(
        &app,
        Method::POST,
        "/v1/tenants",
        ADMIN,
        Some(json!({"name": "t"})),
    )
    .await;
    let tenant_id = tenant["id"].as_str().unwrap().to_string();
    let mut hosts = Vec::new();
    let mut agents = Vec::new();
    for h in 0..HOSTS {
        let v = call(
            &app,
            Method::POST,
            "/v1/hosts",
            ADMIN,
            Some(json!({"name": format!("h{h}")})),
        )
        .await;
        hosts.push(v["id"].as_str().unwrap().to_string());
        agents.push(v["credential"].as_str().unwrap().to_string());
    }
    let pool = call(
        &app,
        Method::POST,
        "/v1/edge-pools",
        ADMIN,
        Some(json!({"name": "inet", "public_ranges": ["198.51.100.0/28"]})),
    )
    .await;
    let edge = call(
        &app,
        Method::POST,
        "/v1/edges",
        ADMIN,
        Some(json!({"pool_id": pool["id"], "name": "e1"})),
    )
    .await;
    let edge_id = edge["id"].as_str().unwrap().to_string();

    // Network n is 10.(n/256).(n%256).0/24 with one
    // subnet covering it, 100 nodes at .10 .. .109; node j lives on host (n + j) % HOSTS, so
    // every agent hosts a node in every network and may resolve anywhere.
    let mut networks = Vec::new();
    let now = manager::store::now_ms();
    let mut tx = store.write().await.unwrap();
    for n in 0..NETWORKS {
        let vni = i64::from(n) + 1;
        sqlx::query("UPDATE counters SET value = $1 WHERE name = 'vni'")
            .bind(vni)
            .execute(tx.conn())
            .await
            .unwrap();
        let net_id = format!("net-{:012x}", n);
        let base: u32 = (10 << 24) | ((n / 256) << 16) | ((n % 256) << 8);
        let cidr = format!("10.{}.{}.0/24", n / 256, n % 256);
        sqlx::query(
            "INSERT INTO networks (id, tenant_id, name, cidr, vni, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&net_id)
        .bind(&tenant_id)
        .bind(format!("n{n}"))
        .bind(&cidr)
        .bind(vni)
        .bind(now)
        .execute(tx.conn())
        .await
        .unwrap();
        let sub_id = format!("sub-{:012x}", n);
        sqlx::query(
            "INSERT INTO subnets (id, tenant_id, network_id, name, cidr, first_addr, last_addr, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&sub_id)
        .bind(&tenant_id)
        .bind(&net_id)
        .bind("s")
        .bind(&cidr)
        .bind(i64::from(base))
        .bind(i64::from(base + 255))
        .bind(now)
        .execute(tx.conn())
        .await
        .unwrap();
        // 100 nodes in one multi-row INSERT.
        let mut sql = String::from(
            "INSERT INTO nodes (id, tenant_id, network_id, subnet_id, host_id, name, vip, vip_num, mac, created_at) VALUES ",
        );
        for j in 0..NODES_PER_NETWORK {
            let p = j * 10;
            if j > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},${},${},${},${},${},${},${},${},${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7,
                p + 8,
                p + 9,
                p + 10
            ));
        }
        let mut q = sqlx::query(&sql);
        for j in 0..NODES_PER_NETWORK {
            let ip = base + 10 + j;
            let v = vni as u32;
            q = q
                .bind(format!("node-{:06x}{:06x}", n, j))
                .bind(tenant_id.clone())
                .bind(net_id.clone())
                .bind(sub_id.clone())
                .bind(hosts[(n as usize + j as usize) % HOSTS].clone())
                .bind(format!("v{j}"))
                .bind(std::net::Ipv4Addr::from(ip).to_string())
                .bind(i64::from(ip))
                .bind(format!(
                    "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    (v >> 16) & 0xff,
                    (v >> 8) & 0xff,
                    v & 0xff,
                    (ip >> 8) & 0xff,
                    ip & 0xff
                ))
                .bind(now);
        }
        q.execute(tx.conn()).await.unwrap();
        networks.push(net_id);
    }
    tx.commit().await.unwrap();
    let nodes = u64::from(NETWORKS * NODES_PER_NETWORK);
    let rss1 = rss_bytes();
    eprintln!(
        "setup: {nodes} nodes in {NETWORKS} networks, {HOSTS} hosts in {:.1?}; RSS {} -> {} MiB, \
         {:.0} bytes/node (store loaded, resolve caches cold)",
        t0.elapsed(),
        rss0 >> 20,
        rss1 >> 20,
        rss1.saturating_sub(rss0) as f64 / nodes as f64
    );
    Fixture {
        _dir: dir,
        app,
        store,
        agents,
        networks,
        edge_id,
    }
}

fn resolve_request(f: &Fixture, k: u64) -> Request<Body> {
    // A cheap permutation over (network, node) so that successive requests spread.
    // 7919 is prime to 100_000: k in 0..100_000 visits every node once.
    let total = u64::from(NETWORKS * NODES_PER_NETWORK);
    let x = (k % total) * 7919 % total;
    let n = (x % u64::from(NETWORKS)) as u32;
    let j = ((x / u64::from(NETWORKS)) % u64::from(NODES_PER_NETWORK)) as u32;
    let ip = std::net::Ipv4Addr::from((10 << 24) | ((n / 256) << 16) | ((n % 256) << 8) | (10 + j));
    let agent = &f.agents[(k % HOSTS as u64) as usize];
    Request::builder()
        .method(Method::POST)
        .uri("/v1/resolve")
        .header("authorization", format!("Bearer {agent}"))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"network_id": f.networks[n as usize], "ip": ip.to_string()}).to_string(),
        ))
        .unwrap()
}

async fn resolve_many(f: &Arc<Fixture>, start: u64, iters: u64) -> Duration {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONCURRENCY {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut k = start + c;
            while k < start + iters {
                let resp = f.app.clone().oneshot(resolve_request(&f, k)).await.unwrap();
                assert!(resp.status().is_success(), "resolve: {}", resp.status());
                let _ = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
                k += CONCURRENCY;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t.elapsed()
}

/// Opens `WATCHERS` agent streams resuming from the current revision; each reports the
/// revision of every `change` it reads.
async fn open_watchers(f: &Arc<Fixture>) -> tokio::sync::mpsc::UnboundedReceiver<(usize, i64)> {
    let since = f.store.revision().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for w in 0..WATCHERS {
        let req = Request::builder()
            .uri(format!("/v1/watch?since={since}&timeout_secs=3600"))
            .header(
                "authorization",
                format!("Bearer {}", f.agents[w % f.agents.len()]),
            )
            .body(Body::empty())
            .unwrap();
        let resp = f.app.clone().oneshot(req).await.unwrap();
        assert!(resp.status().is_success());
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stream = resp.into_body().into_data_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        if v["type"] == "change"
                            && tx.send((w, v["revision"].as_i64().unwrap_or(0))).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    }
    rx
}

/// One write (an edge's weight) and the time until every watcher has read it.
async fn push_once(
    f: &Arc<Fixture>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, i64)>,
    k: u64,
) -> Duration {
    let t = Instant::now();
    call(
        &f.app,
        Method::PATCH,
        &format!("/v1/edges/{}", f.edge_id),
        ADMIN,
        Some(json!({"weight": 1 + (k % 100)})),
    )
    .await;
    let rev = f.store.revision().await.unwrap();
    let mut seen = [false; WATCHERS];
    let mut left = WATCHERS;
    while left > 0 {
        let (w, r) = rx.recv().await.expect("watchers alive");
        if r >= rev && !seen[w] {
            seen[w] = true;
            left -= 1;
        }
    }
    t.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = Arc::new(rt.block_on(setup()));
    let rss_loaded = rss_bytes();
    resolve_bench(c, &rt, &f);
    let rss_warm = rss_bytes();
    eprintln!(
        "RSS after resolving: {} MiB (+{:.0} bytes/node over the loaded store: resolve caches)",
        rss_warm >> 20,
        rss_warm.saturating_sub(rss_loaded) as f64 / f64::from(NETWORKS * NODES_PER_NETWORK)
    );
    let mut rx = rt.block_on(open_watchers(&f));
    rt.block_on(push_once(&f, &mut rx, 0));
    let mut g = c.benchmark_group("watch");
    g.sample_size(10);
    let mut k = 1;
    g.bench_function("push_to_100_watchers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                k += 1;
                total += rt.block_on(push_once(&f, &mut rx, k));
            }
            total
        })
    });
    g.finish();
}

fn resolve_bench(c: &mut Criterion, rt: &Runtime, f: &Arc<Fixture>) {
    // One pass over every node first: the cold rate (each answer read from the store),
    // then the measurement runs on warm caches (no write happens during it).
    let total = u64::from(NETWORKS * NODES_PER_NETWORK);
    let cold = rt.block_on(resolve_many(f, 0, total));
    eprintln!(
        "cold pass: {total} resolves in {cold:.1?} = {:.0}/s",
        total as f64 / cold.as_secs_f64()
    );
    let mut g = c.benchmark_group("resolve");
    g.throughput(Throughput::Elements(1));
    let mut next = total;
    g.bench_function("agent_oneshot_c32", |b| {
        b.iter_custom(|iters| {
            let start = next;
            next += iters;
            rt.block_on(resolve_many(f, start, iters))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
