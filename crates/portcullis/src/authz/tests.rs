use super::engine::{RegoPolicy, decision_of};
use super::*;
use crate::authn::token::Claims;
use http::{HeaderMap, Method};
use serde_json::Map;

fn demo_policy() -> RegoPolicy {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let source = std::fs::read_to_string(format!("{dir}/authz.rego")).expect("policy");
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/data.json")).expect("data"))
            .expect("json");
    RegoPolicy::new(
        &[("authz.rego".into(), source)],
        &[data],
        "data.api.authz.allow",
    )
    .expect("compiles")
}

fn principal(sub: &str, scopes: &[&str], roles: &[&str]) -> Principal {
    let mut all = Map::new();
    all.insert("roles".into(), json!(roles));
    Principal {
        issuer: Arc::from("t"),
        subject: Some(sub.into()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        claims: Claims {
            sub: Some(sub.into()),
            all,
            ..Claims::default()
        },
    }
}

fn input(method: Method, id: &str, who: &Principal) -> Value {
    let route = RouteAuthz {
        resource_type: "items".into(),
        resource_id: Some("{id}".into()),
        require_mfa: vec![],
    };
    let params = vec![(Arc::from("id"), id.to_string())];
    let headers = HeaderMap::new();
    let facts = RequestFacts {
        method: &method,
        path: "/api/items/x",
        params: &params,
        client_ip: None,
        headers: &headers,
        mtls_identity: None,
        upgrade: None,
        grpc: false,
    };
    policy_input(&route, Some(who), false, &facts)
}

#[test]
fn input_has_the_documented_shape() {
    let alice = principal("alice", &["items:read"], &["user"]);
    let value = input(Method::DELETE, "7", &alice);
    assert_eq!(value["action"], "delete_items");
    assert_eq!(value["resource"]["type"], "items");
    assert_eq!(value["resource"]["id"], "7");
    assert_eq!(value["resource"]["params"]["id"], "7");
    assert_eq!(value["user"]["id"], "alice");
    assert_eq!(value["user"]["roles"], json!(["user"]));
    assert_eq!(value["environment"]["mfa_verified"], false);
    assert_eq!(value["environment"]["mtls_identity"], Value::Null);
    assert_eq!(value["request"]["method"], "DELETE");
    assert_eq!(value["user"]["binding"], Value::Null);
}

#[test]
fn a_bound_token_shows_its_binding() {
    let mut bound = principal("alice", &["items:read"], &["user"]);
    bound
        .claims
        .all
        .insert("cnf".into(), json!({"jkt": "thumb"}));
    assert_eq!(
        input(Method::GET, "1", &bound)["user"]["binding"],
        json!({"type": "dpop", "jkt": "thumb"})
    );
    bound
        .claims
        .all
        .insert("cnf".into(), json!({"x5t#S256": "cert"}));
    assert_eq!(
        input(Method::GET, "1", &bound)["user"]["binding"],
        json!({"type": "mtls", "x5t": "cert"})
    );
}

#[test]
fn the_client_certificate_is_in_the_input() {
    let identity = crate::authn::mtls::ClientIdentity {
        subject: "CN=api".into(),
        spiffe_id: Some("spiffe://corp.test/ns/payments/sa/api".into()),
        dns_names: vec!["api.corp.test".into()],
        uris: vec!["spiffe://corp.test/ns/payments/sa/api".into()],
        sha256: "abc".into(),
        valid: (0, i64::MAX),
    };
    let route = RouteAuthz::default();
    let headers = HeaderMap::new();
    let facts = RequestFacts {
        method: &Method::GET,
        path: "/x",
        params: &[],
        client_ip: None,
        headers: &headers,
        mtls_identity: Some(&identity),
        upgrade: None,
        grpc: false,
    };
    let value = policy_input(&route, None, false, &facts);
    assert_eq!(value["environment"]["mtls_identity"], identity.to_json());
    assert_eq!(
        value["environment"]["mtls_identity"]["spiffe_id"],
        "spiffe://corp.test/ns/payments/sa/api"
    );
    assert_eq!(value["environment"]["mtls_identity"]["sha256"], "abc");
}

/// The Rego input is built straight into the engine's values: it must be the JSON input,
/// member for member, whatever the request carries.
#[test]
fn the_rego_input_is_the_json_input() {
    let mut who = principal("alice", &["items:read", "items:write"], &["user", "ops"]);
    who.claims.all.insert(
        "nested".into(),
        json!({"n": [1, -2, 2.5, u64::MAX, null, true], "s": {"deep": "x"}}),
    );
    who.claims.all.insert("cnf".into(), json!({"jkt": "thumb"}));
    let identity = crate::authn::mtls::ClientIdentity {
        subject: "CN=api".into(),
        spiffe_id: None,
        dns_names: vec!["api.corp.test".into()],
        uris: vec![],
        sha256: "abc".into(),
        valid: (0, i64::MAX),
    };
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", "curl/8".parse().expect("header"));
    headers.insert("accept", "application/json".parse().expect("header"));
    let params = vec![
        (Arc::from("id"), "7".to_string()),
        (Arc::from("org"), "o".into()),
    ];
    let route = RouteAuthz {
        resource_type: "items".into(),
        resource_id: Some("{org}/{id}".into()),
        require_mfa: vec![],
    };
    for (principal, mtls, grpc, upgrade, ip) in [
        (
            Some(&who),
            Some(&identity),
            false,
            Some("websocket"),
            Some("203.0.113.9"),
        ),
        (None, None, true, None, None),
        (Some(&who), None, false, None, Some("2001:db8::1")),
    ] {
        let facts = RequestFacts {
            method: &Method::PATCH,
            path: "/pkg.Items/Get",
            params: &params,
            client_ip: ip.map(|ip| ip.parse().expect("ip")),
            headers: &headers,
            mtls_identity: mtls,
            upgrade,
            grpc,
        };
        let derived = Derived::of(&route, &facts);
        let rego: regorus::Value = input::build(&route, principal, true, &facts, &derived);
        let json: Value = input::build(&route, principal, true, &facts, &derived);
        // One clock reading serves both (and the decision record).
        assert_eq!(json["environment"]["time"], derived.time.as_str());
        assert_eq!(rego, rego_value(&json), "{json}");
        assert_eq!(json["resource"]["id"], "o/7");
        assert_eq!(
            json["action"],
            if grpc {
                "/pkg.Items/Get"
            } else {
                "patch_items"
            }
        );
    }
}

#[test]
fn json_numbers_keep_their_kind_in_rego() {
    let value = rego_value(&json!([1, -2, 2.5, u64::MAX]));
    assert_eq!(value[0], regorus::Value::from(1u64));
    assert_eq!(value[1], regorus::Value::from(-2i64));
    assert_eq!(value[2], regorus::Value::from(2.5f64));
    assert_eq!(value[3], regorus::Value::from(u64::MAX));
}

#[test]
fn demo_policy_decides_ownership_and_roles() {
    let policy = demo_policy();
    let allow = |m: Method, id: &str, p: &Principal| {
        policy.decide(&input(m, id, p)).expect("decides").allow
    };
    let alice = principal("alice", &["items:read", "items:write"], &[]);
    let bob = principal("bob", &["items:read", "items:write"], &[]);
    let reader = principal("carol", &["items:read"], &[]);
    let admin = principal("root", &[], &["admin"]);
    assert!(allow(Method::GET, "1", &reader));
    assert!(allow(Method::PUT, "1", &alice), "owner may change");
    assert!(!allow(Method::PUT, "1", &bob), "non-owner may not");
    assert!(allow(Method::DELETE, "3", &bob));
    assert!(!allow(Method::POST, "", &reader), "no write scope");
    assert!(allow(Method::DELETE, "1", &admin));
}

#[test]
fn bad_policies_and_results_are_refused() {
    assert!(
        RegoPolicy::new(
            &[("x.rego".into(), "package x\nallow if {".into())],
            &[],
            "data.x.allow"
        )
        .is_err()
    );
    assert!(
        RegoPolicy::new(
            &[("x.rego".into(), "package x\nallow := true".into())],
            &[],
            "x.allow"
        )
        .is_err()
    );
    assert!(decision_of(&json!("yes")).is_err());
    assert!(decision_of(&json!({"allow": "true"})).is_err());
    assert_eq!(
        decision_of(&json!({"allow": false, "reasons": ["r"]})).map(|d| d.reasons),
        Ok(vec!["r".to_string()])
    );
    let undefined = RegoPolicy::new(
        &[("x.rego".into(), "package x\nallow if input.never".into())],
        &[],
        "data.x.allow",
    )
    .expect("ok");
    assert_eq!(undefined.decide(&json!({})).map(|d| d.allow), Ok(false));
}

fn demo_cedar() -> super::cedar::CedarPolicy {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policies");
    let source = std::fs::read_to_string(format!("{dir}/authz.cedar")).expect("policy");
    let entities: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/entities.json")).expect("entities"),
    )
    .expect("json");
    super::cedar::CedarPolicy::new(&[("authz.cedar".into(), source)], Some(&entities))
        .expect("compiles")
}

/// xorshift: deterministic, varied enough to reach every rule of the demo policy.
struct Cases(u64);

impl Cases {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next(items.len() as u64) as usize]
    }
}

#[test]
fn cedar_and_rego_versions_of_the_demo_policy_agree() {
    let (rego, cedar) = (demo_policy(), demo_cedar());
    let mut cases = Cases(0x0dd_ba11_c0ff_ee01);
    let mut allowed = 0;
    for _ in 0..500 {
        let method = Method::from_bytes(cases.pick(&["GET", "POST", "PUT", "DELETE"]).as_bytes())
            .expect("method");
        let scopes: Vec<&str> = ["items:read", "items:write"]
            .into_iter()
            .filter(|_| cases.next(2) == 0)
            .collect();
        let roles: Vec<&str> = ["admin", "user"]
            .into_iter()
            .filter(|_| cases.next(3) == 0)
            .collect();
        let who = principal(cases.pick(&["alice", "bob", "carol"]), &scopes, &roles);
        let input = input(method, cases.pick(&["1", "2", "3", "4"]), &who);
        let (r, c) = (
            rego.decide(&input).expect("rego"),
            cedar.decide(&input).expect("cedar"),
        );
        assert_eq!(r.allow, c.allow, "rego and cedar disagree on {input}");
        allowed += usize::from(r.allow);
    }
    assert!(
        allowed > 50 && allowed < 450,
        "{allowed} of 500 allowed: the generator covers too little"
    );
}

#[test]
fn a_runaway_policy_is_stopped_and_refused() {
    let source = "package slow\nimport rego.v1\nallow if { count([x | some x in numbers.range(1, 3000000); x > 0]) > 0 }\n";
    let policy = RegoPolicy::new(
        &[("slow.rego".into(), source.into())],
        &[],
        "data.slow.allow",
    );
    // Either the load-time probe or the request-time evaluation hits the time limit.
    match policy {
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.contains("time") || message.contains("limit"),
                "{message}"
            )
        }
        Ok(policy) => assert!(
            policy.decide(&json!({})).is_err(),
            "a runaway evaluation must fail, never allow"
        ),
    }
}
