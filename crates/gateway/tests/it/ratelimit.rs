//! Rate limiting and threat screening on the real binary, in memory and shared through a
//! real redis-server.

use crate::identity::{ISSUER, baseline_claims, jwks, token};
use crate::util::*;
use http::Request;
use http_body_util::Full;
use portcullis::authn::sign::SigningKey;
use serde_json::json;

const UA: &str = "portcullis-tests/1.0";

fn limited(upstream: &Upstream, rate_limit: &str, route_limit: &str) -> String {
    config_with(
        &upstream.url(),
        &format!(
            "rate_limit:\n{rate_limit}routes:\n  - match: {{ prefix: / }}\n    upstream: main\n    auth: none\n{route_limit}"
        ),
    )
}

async fn hit(
    gw: &Gateway,
    path: &str,
    ua: Option<&str>,
    xff: Option<&str>,
) -> (u16, http::HeaderMap) {
    let mut req = Request::get(gw.url(path));
    if let Some(ua) = ua {
        req = req.header("user-agent", ua);
    }
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    let (status, headers, _) = send(req.body(Full::default()).unwrap()).await.unwrap();
    (status.as_u16(), headers)
}

async fn admitted(gw: &Gateway, n: usize, path: &str, ua: Option<&str>) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if hit(gw, path, ua, None).await.0 == 200 {
            ok += 1;
        }
    }
    ok
}

#[tokio::test]
async fn route_limit_admits_exactly_the_quota_with_headers() {
    let upstream = Upstream::start().await;
    let config = limited(
        &upstream,
        "  adaptive: { enabled: false }\n",
        "    rate_limit: { limit: 5, window: 60s, key: ip }\n",
    );
    let gw = Gateway::start(&config).await;
    let (status, headers) = hit(&gw, "/a", Some(UA), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit-policy"], "\"route\";q=5;w=60");
    assert_eq!(
        headers["ratelimit"].to_str().unwrap().split(';').nth(1),
        Some("r=4")
    );
    assert_eq!(admitted(&gw, 10, "/a", Some(UA)).await, 4);
    let (status, headers) = hit(&gw, "/a", Some(UA), None).await;
    assert_eq!(status, 429);
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(headers["ratelimit-policy"], "\"route\";q=5;w=60");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(upstream.hits(), 5, "refused requests reached the upstream");
    let event = gw
        .event_where("rate limit event", |e| e["event_type"] == "rate_limit")
        .await;
    assert_eq!(event["reason"], "rate_limit");
}

#[tokio::test]
async fn each_threat_factor_lowers_the_effective_limit() {
    let upstream = Upstream::start().await;
    let dir = test_dir(&[]);
    std::fs::write(
        dir.path().join("bad_ips.txt"),
        "# known bad\n192.0.2.0/24\n",
    )
    .unwrap();
    // Each case gets its own route (and so its own counter): floor(10 × (1 − score/200)).
    let mut routes = String::new();
    for name in ["calm", "noua", "inject"] {
        routes.push_str(&format!("  - match: {{ prefix: /{name}/ }}\n    upstream: main\n    auth: none\n    rate_limit: {{ limit: 10, window: 60s, key: ip }}\n"));
    }
    let config = config_with(
        &upstream.url(),
        &format!(
            "rate_limit:\n  adaptive: {{ enabled: true, block_score: 90 }}\n  ip_reputation: {{ deny_file: bad_ips.txt }}\nroutes:\n{routes}"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    assert_eq!(admitted(&gw, 15, "/calm/x", Some(UA)).await, 10, "score 0");
    assert_eq!(
        admitted(&gw, 15, "/noua/x", None).await,
        9,
        "missing user agent: score 20"
    );
    assert_eq!(
        admitted(&gw, 15, "/inject/x?q=..%2F..%2Fetc%2Fpasswd", Some(UA)).await,
        8,
        "suspicious parameter: score 40"
    );
    assert_eq!(
        upstream.hits(),
        10 + 9 + 8,
        "a refused request reached the upstream"
    );
    // Over the limit with a score above 50: a suspicious_activity event with the factors.
    for _ in 0..12 {
        hit(&gw, "/inject/x?q=%3Cscript%3E", None, None).await;
    }
    let event = gw
        .event_where("suspicious", |e| e["event_type"] == "suspicious_activity")
        .await;
    let detail = event["details"]["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("user_agent") && detail.contains("suspicious_parameters"),
        "{detail}"
    );
}

#[tokio::test]
async fn hostile_scores_are_blocked_outright_and_spoofed_forwarding_does_not_help() {
    let upstream = Upstream::start().await;
    let config = limited(
        &upstream,
        "  adaptive: { enabled: true, block_score: 60 }\n",
        "    rate_limit: { limit: 3, window: 60s, key: ip }\n",
    );
    let gw = Gateway::start(&config).await;
    // Missing UA (20) + injection (40) = 60: refused before anything else happens.
    let (status, _) = hit(&gw, "/a?id=1%27%20or%20%271%27%3D%271", None, None).await;
    assert_eq!(status, 429);
    gw.event_where("blocked", |e| e["reason"] == "threat_block")
        .await;
    // A rotating X-Forwarded-For from an untrusted peer is the same client.
    let mut ok = 0;
    for i in 0..10 {
        if hit(&gw, "/a", Some(UA), Some(&format!("198.51.100.{i}")))
            .await
            .0
            == 200
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn repeated_auth_failures_lock_the_client_out_before_verification() {
    let upstream = Upstream::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let dir = test_dir(&[("jwks.json", &jwks(&key))]);
    let config = config_with(
        &upstream.url(),
        &format!(
            "identity:\n  jwt:\n    - {{ name: t, issuer: {ISSUER}, audiences: [api], jwks_file: jwks.json, algorithms: [ES256] }}\n{ALLOW_ALL}rate_limit:\n  adaptive: {{ enabled: false }}\n  auth_failures: {{ limit: 3, window: 60s, lockout: 5m }}\nroutes:\n  - match: {{ prefix: / }}\n    upstream: main\n"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    let good = token(&key, &baseline_claims());
    let bearer = |t: &str| {
        Request::get(gw.url("/x"))
            .header("user-agent", UA)
            .header("authorization", format!("Bearer {t}"))
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send(bearer(&good)).await.unwrap().0, 200);
    for _ in 0..4 {
        assert_eq!(send(bearer("not.a.token")).await.unwrap().0, 401);
    }
    let (status, headers, _) = send(bearer(&good)).await.unwrap();
    assert_eq!(
        status, 429,
        "a locked-out client is refused even with a valid token"
    );
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 200
    );
    gw.event_where("lockout", |e| e["reason"] == "auth_lockout")
        .await;
    assert_eq!(upstream.hits(), 1);
}

fn shared_config(upstream: &Upstream, extra: &str) -> tempfile::TempDir {
    let dir = test_dir(&[]);
    std::fs::write(dir.path().join("portcullis.yaml"), limited(
        upstream,
        &format!("  store: redis\n  redis: {{ url: \"${{file:redis-url}}\", timeout: 100ms }}\n  adaptive: {{ enabled: false }}\n{extra}"),
        "    rate_limit: { limit: 40, window: 60s, key: ip }\n",
    ))
    .unwrap();
    dir
}

#[tokio::test]
async fn two_instances_sharing_redis_admit_exactly_the_limit() {
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let dir = shared_config(&upstream, "");
        std::fs::write(dir.path().join("redis-url"), redis.url()).unwrap();
        gateways.push(Gateway::start_in(dir).await);
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = gateways[i % 2].url("/a");
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..15 {
                let req = Request::get(&url)
                    .header("user-agent", UA)
                    .body(Full::default())
                    .unwrap();
                match send(req).await.unwrap().0.as_u16() {
                    200 => ok += 1,
                    429 => {}
                    other => panic!("unexpected status {other}"),
                }
            }
            ok
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(
        total, 40,
        "120 requests against two instances must admit exactly the shared limit"
    );
    assert_eq!(upstream.hits(), 40);
}

#[tokio::test]
async fn redis_outage_falls_back_to_local_limits_without_5xx_and_recovers() {
    let mut redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let dir = shared_config(&upstream, "  on_store_error: local\n  local_share: 0.5\n");
    std::fs::write(dir.path().join("redis-url"), redis.url()).unwrap();
    let gw = Gateway::start_in(dir).await;
    assert_eq!(admitted(&gw, 10, "/a", Some(UA)).await, 10);
    let port = redis.port;
    redis.stop();
    // Local limits at half the global limit; never a 5xx.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(hit(&gw, "/a", Some(UA), None).await.0);
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        20,
        "{statuses:?}"
    );
    gw.event_where("store down", |e| e["reason"] == "rate_limit_store_down")
        .await;
    let (_, _, metrics) = get(&gw.admin_url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("portcullis_rate_limit_store_degraded 1"),
        "{metrics}"
    );
    // Redis back (a new, empty server on the same port): shared limits resume by themselves.
    let _redis = Redis::start_on(port).await;
    eventually_async("shared limits to resume", || async {
        hit(&gw, "/a", Some(UA), None).await;
        gw.events()
            .iter()
            .any(|e| e["reason"] == "rate_limit_store_recovered")
    })
    .await;
}

#[tokio::test]
async fn redis_cluster_limits_hold_across_slots() {
    let cluster = Cluster::start().await;
    let upstream = Upstream::start().await;
    let mut routes = String::new();
    for i in 0..8 {
        routes.push_str(&format!("  - match: {{ prefix: /r{i}/ }}\n    upstream: main\n    auth: none\n    rate_limit: {{ limit: 7, window: 60s, key: ip }}\n"));
    }
    let dir = test_dir(&[]);
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    std::fs::write(dir.path().join("redis-url"), urls.join(",")).unwrap();
    // Each route is called by its own client (through a trusted proxy), so the limit keys
    // spread over the slots; a client's default and route limits share one (one script).
    let config = with_listen(
        &config_with(
            &upstream.url(),
            &format!(
                "rate_limit:\n  store: redis\n  redis: {{ url: \"${{file:redis-url}}\", timeout: 200ms, cluster: true }}\n  on_store_error: deny\n  adaptive: {{ enabled: false }}\n  default: {{ limit: 100, window: 60s, key: ip }}\nroutes:\n{routes}"
            ),
        ),
        "  trusted_proxies: [127.0.0.0/8]\n",
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    for i in 0..8 {
        let client = format!("203.0.113.{i}");
        let mut ok = 0;
        for _ in 0..12 {
            if hit(&gw, &format!("/r{i}/x"), Some(UA), Some(&client))
                .await
                .0
                == 200
            {
                ok += 1;
            }
        }
        assert_eq!(ok, 7, "route {i}");
    }
    assert_eq!(upstream.hits(), 56);
    let holding: Vec<usize> = (0..3)
        .filter(|n| cluster.redis_cli(*n, &["dbsize"]) != "0")
        .collect();
    assert!(
        holding.len() >= 2,
        "the limit keys did not spread over the slots: {holding:?}"
    );
    for i in 0..8 {
        let pattern = format!("portcullis:rl:{{ip:203.0.113.{i}}}:*");
        let keys: Vec<String> = (0..3)
            .map(|n| cluster.redis_cli(n, &["keys", &pattern]))
            .filter(|k| !k.is_empty())
            .collect();
        assert_eq!(
            keys.len(),
            1,
            "client {i}'s limits on several nodes: {keys:?}"
        );
        assert_eq!(keys[0].lines().count(), 2, "client {i}: {keys:?}");
    }
    let sha = cluster.redis_cli(
        holding[0],
        &["script", "load", portcullis::ratelimit::gcra::LUA],
    );
    for node in holding {
        assert_eq!(
            cluster.redis_cli(node, &["script", "exists", &sha]),
            "1",
            "script missing on node {node}"
        );
    }
}

#[tokio::test]
async fn a_shared_redis_reputation_set_raises_the_score_on_every_instance() {
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let dir = test_dir(&[]);
    std::fs::write(dir.path().join("redis-url"), redis.url()).unwrap();
    let mut routes = String::new();
    for name in ["before", "after"] {
        routes.push_str(&format!("  - match: {{ prefix: /{name}/ }}\n    upstream: main\n    auth: none\n    rate_limit: {{ limit: 10, window: 60s, key: ip }}\n"));
    }
    routes.push_str("  - match: { prefix: /probe }\n    upstream: main\n    auth: none\n");
    let config = config_with(
        &upstream.url(),
        &format!(
            "rate_limit:\n  store: redis\n  redis: {{ url: \"${{file:redis-url}}\" , timeout: 200ms }}\n  ip_reputation: {{ redis_set: \"portcullis:bad_ips\" }}\n  adaptive: {{ enabled: true, block_score: 90 }}\nroutes:\n{routes}"
        ),
    );
    std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
    let gw = Gateway::start_in(dir).await;
    assert_eq!(admitted(&gw, 12, "/before/x", Some(UA)).await, 10);
    assert_eq!(upstream.hits(), 10);
    let status = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "sadd",
            "portcullis:bad_ips",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    // Each instance copies the set once a second (no request waits on a lookup): a listed
    // address shows in the offenders with the factor within a few seconds.
    eventually_async("the listed address to be scored", || async {
        assert_eq!(hit(&gw, "/probe", Some(UA), None).await.0, 200);
        let req = Request::get(gw.admin_url("/admin/offenders"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::default())
            .unwrap();
        let (_, _, body) = send(req).await.unwrap();
        body.contains("ip_reputation")
    })
    .await;
    // Listed: score 50, floor(10 × 0.75) = 7.
    assert_eq!(admitted(&gw, 12, "/after/x", Some(UA)).await, 7);
    let listed = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "info", "commandstats"])
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&listed.stdout).to_string();
    let sismember = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_sismember:"))
        .map_or(0, |l| {
            l.split(['=', ',']).nth(1).unwrap().parse::<u64>().unwrap()
        });
    assert!(
        sismember <= 12,
        "requests kept asking Redis per request ({sismember} SISMEMBER): {stats}"
    );
}

#[tokio::test]
async fn two_instances_sharing_redis_admit_exactly_the_limit_per_principal() {
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let (key, _) = SigningKey::generate_es256("k1").unwrap();
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let dir = test_dir(&[("redis-url", &redis.url()), ("jwks.json", &jwks(&key))]);
        let config = config_with(
            &upstream.url(),
            &format!(
                "identity:\n  jwt:\n    - {{ name: t, issuer: {ISSUER}, audiences: [api], jwks_file: jwks.json, algorithms: [ES256] }}\n{ALLOW_ALL}rate_limit:\n  store: redis\n  redis: {{ url: \"${{file:redis-url}}\", timeout: 200ms }}\n  adaptive: {{ enabled: false }}\nroutes:\n  - match: {{ prefix: / }}\n    upstream: main\n    rate_limit: {{ limit: 12, window: 60s, key: principal }}\n"
            ),
        );
        std::fs::write(dir.path().join("portcullis.yaml"), config).unwrap();
        gateways.push(Gateway::start_in(dir).await);
    }
    let mut tasks = Vec::new();
    for (i, sub) in ["alice", "bob"].iter().enumerate() {
        let mut claims = baseline_claims();
        claims.insert("sub".into(), json!(sub));
        let token = token(&key, &claims);
        for j in 0..4 {
            let url = gateways[(i + j) % 2].url("/a");
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..10 {
                    let req = Request::get(&url)
                        .header("user-agent", UA)
                        .header("authorization", format!("Bearer {token}"))
                        .body(Full::default())
                        .unwrap();
                    if send(req).await.unwrap().0 == 200 {
                        ok += 1;
                    }
                }
                (i, ok)
            }));
        }
    }
    let mut per_principal = [0, 0];
    for task in tasks {
        let (i, ok) = task.await.unwrap();
        per_principal[i] += ok;
    }
    assert_eq!(
        per_principal,
        [12, 12],
        "each principal gets exactly its limit across both instances"
    );
}

#[tokio::test]
async fn a_redis_slower_than_the_timeout_counts_as_an_outage() {
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let dir = shared_config(&upstream, "  on_store_error: local\n");
    std::fs::write(dir.path().join("redis-url"), redis.url()).unwrap();
    let gw = Gateway::start_in(dir).await;
    assert_eq!(hit(&gw, "/a", Some(UA), None).await.0, 200);
    // Redis stalls for 2 s (DEBUG SLEEP blocks the server): answers come far past 100 ms.
    let port = redis.port.to_string();
    let sleeper = std::process::Command::new("redis-cli")
        .args(["-p", &port, "debug", "sleep", "2"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Keep asking until a request meets the stall (the sleep starts when redis-cli connects).
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let started = std::time::Instant::now();
        let (status, _) = hit(&gw, "/a", Some(UA), None).await;
        assert!(
            status == 200 || status == 429,
            "a slow store must not turn into an error: {status}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1500),
            "waited {:?} for a slow store",
            started.elapsed()
        );
        if gw
            .events()
            .iter()
            .any(|e| e["reason"] == "rate_limit_store_down")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stall was never noticed"
        );
    }
    let _ = sleeper.wait_with_output();
}
