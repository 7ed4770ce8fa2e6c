//! The configuration's tests: files parsed, refused with the field named, and the sample
//! `aula.sample.toml` kept in step with the code. Apart from `config.rs` for their length.

use super::*;

#[test]
fn empty_file_is_the_default() {
    let config = Config::from_toml_str("").expect("empty TOML is a valid config");
    assert_eq!(config, Config::default());
    assert_eq!(
        config.http.bind,
        "0.0.0.0:7880".parse::<SocketAddr>().expect("literal")
    );
    assert_eq!(
        config.rtc.udp_bind,
        "0.0.0.0:7882".parse::<SocketAddr>().expect("literal")
    );
    assert!(config.is_dev_mode());
}

#[test]
fn sample_config_parses() {
    let text = include_str!("../../../aula.sample.toml");
    let config = Config::from_toml_str(text).expect("the shipped sample must parse");
    // The sample shows the defaults, so copying it changes nothing by surprise.
    assert_eq!(config, Config::default());

    // The commented-out examples must be valid too once an operator uncomments them.
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with("api_")
                    || rest.starts_with("advertised_ips")
                    || rest.starts_with("workers") =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let uncommented = uncommented.replacen("advertised_ips = []\n", "", 1);
    let config = Config::from_toml_str(&uncommented).expect("uncommented sample must parse");
    assert!(!config.is_dev_mode());
    assert_eq!(config.rtc.advertised_ips.len(), 1);
    assert_eq!(config.rtc.workers, 4);
}

#[test]
fn unknown_field_is_refused_and_named() {
    let err = Config::from_toml_str("[keys]\napi_secet = \"x\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`keys.api_secet`"), "{msg}");
    let err = Config::from_toml_str("bogus = 1\n").unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn bad_value_names_the_field() {
    let err = Config::from_toml_str("[http]\nbind = \"not an address\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`http.bind` (line 2)"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");

    let err = Config::from_toml_str("[room]\nempty_timeout_secs = -1\n").unwrap_err();
    assert!(err.to_string().contains("empty_timeout_secs"), "{err}");

    let err = Config::from_toml_str("[rtc]\nadvertised_ips = [\"1.2.3\"]\n").unwrap_err();
    assert!(err.to_string().contains("`rtc.advertised_ips`"), "{err}");

    // Not even TOML: still one line, with the line number.
    let err = Config::from_toml_str("[http\n").unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
}

#[test]
fn keys_come_in_pairs_and_secrets_are_long() {
    let err = Config::from_toml_str("[keys]\napi_key = \"k\"\n").unwrap_err();
    assert!(err.to_string().contains("keys.api_secret"), "{err}");
    let err =
        Config::from_toml_str("[keys]\napi_key = \"k\"\napi_secret = \"short\"\n").unwrap_err();
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    let ok = Config::from_toml_str(&format!(
        "[keys]\napi_key = \"k\"\napi_secret = \"{}\"\n",
        "s".repeat(32)
    ))
    .expect("valid key pair");
    assert_eq!(ok.api_keys().key, "k");
    assert!(!ok.is_dev_mode());
}

#[test]
fn idle_timeout_must_be_positive() {
    let err = Config::from_toml_str("[http]\nws_idle_timeout_secs = 0\n").unwrap_err();
    assert!(
        err.to_string().contains("http.ws_idle_timeout_secs"),
        "{err}"
    );
    let ok = Config::from_toml_str("[http]\nws_idle_timeout_secs = 5\n").expect("valid");
    assert_eq!(ok.http.ws_idle_timeout_secs, 5);
}

#[test]
fn workers_default_to_the_cores_and_are_bounded() {
    assert_eq!(
        Config::default().rtc.workers,
        aula_sfu::api::default_workers()
    );
    let two = Config::from_toml_str("[rtc]\nworkers = 2\n").expect("valid");
    assert_eq!(two.sfu_config().workers, 2);
    for bad in ["0", "257"] {
        let err = Config::from_toml_str(&format!("[rtc]\nworkers = {bad}\n")).unwrap_err();
        assert!(err.to_string().contains("rtc.workers"), "{err}");
    }
}

#[test]
fn connection_limits_have_defaults_and_must_be_positive() {
    let http = Config::default().http;
    assert_eq!(http.header_read_timeout_secs, 10);
    assert_eq!(http.max_connections, 4096);
    assert_eq!(http.max_connections_per_ip, 256);
    assert_eq!(http.max_unjoined_websockets, 1024);
    for field in [
        "header_read_timeout_secs",
        "max_connections",
        "max_unjoined_websockets",
    ] {
        let err = Config::from_toml_str(&format!("[http]\n{field} = 0\n")).unwrap_err();
        assert!(err.to_string().contains(&format!("http.{field}")), "{err}");
    }
    let ok = Config::from_toml_str("[http]\nmax_connections_per_ip = 0\n").expect("valid");
    assert_eq!(
        ok.http.max_connections_per_ip, 0,
        "0 turns the per-address cap off"
    );
}

#[test]
fn webhooks_need_an_http_url_and_an_attempt() {
    let ok = Config::from_toml_str("[webhooks]\nurl = \"http://127.0.0.1:9000/hooks\"\n")
        .expect("valid");
    assert_eq!(ok.webhooks.max_attempts, 5);
    assert!(Config::from_toml_str("[webhooks]\nurl = \"https://backend/hooks\"\n").is_ok());
    let err = Config::from_toml_str("[webhooks]\nurl = \"ftp://backend/hooks\"\n").unwrap_err();
    assert!(err.to_string().contains("`webhooks.url`"), "{err}");
    let err = Config::from_toml_str("[webhooks]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap_err();
    assert!(err.to_string().contains("`webhooks.ca_file`"), "{err}");
    let err = Config::from_toml_str("[webhooks]\nmax_attempts = 0\n").unwrap_err();
    assert!(err.to_string().contains("max_attempts"), "{err}");
}

#[test]
fn test_impairment_is_off_unless_switched_on() {
    assert!(!Config::default().dev.test_impairment);
    assert!(!Config::loopback_ephemeral().dev.test_impairment);
    let on = Config::from_toml_str("[dev]\ntest_impairment = true\n").expect("valid");
    assert!(on.dev.test_impairment);
    let err = Config::from_toml_str("[dev]\ntest_impairments = true\n").unwrap_err();
    assert!(err.to_string().contains("`dev.test_impairments`"), "{err}");
}

#[test]
fn bad_log_level_is_refused() {
    let err = Config::from_toml_str("log_level = \"info,=[\"\n").unwrap_err();
    assert!(err.to_string().contains("log_level"), "{err}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let err = Config::load(Path::new("/nonexistent/aula.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/aula.toml"), "{err}");
}

#[test]
fn secret_is_not_debug_printed() {
    let mut config = Config::default();
    config.keys.api_secret = Some("super-secret-value".into());
    assert!(!format!("{config:?}").contains("super-secret-value"));
}

#[test]
fn cluster_is_off_by_default_and_validated() {
    assert_eq!(Config::default().cluster, None);
    let base = "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\nregion = \"eu-west\"\n";
    let config = Config::from_toml_str(base).expect("valid");
    let cluster = config.cluster.expect("present");
    assert!(cluster.node_id.starts_with("node-"), "{}", cluster.node_id);
    assert_eq!(
        (
            cluster.node_ttl_secs,
            cluster.refresh_secs,
            cluster.lease_ttl_secs
        ),
        (10, 3, 10)
    );
    let other = Config::from_toml_str(base)
        .expect("valid")
        .cluster
        .expect("present");
    assert_ne!(cluster.node_id, other.node_id, "random ids differ");

    let full = format!(
        "{base}node_id = \"eu-1\"\npublic_addrs = [\"eu-1.school.example:7880\", \"[::1]:7880\"]\n"
    );
    let cluster = Config::from_toml_str(&full)
        .expect("valid")
        .cluster
        .expect("present");
    assert_eq!(cluster.node_id, "eu-1");
    assert_eq!(cluster.public_addrs.len(), 2);

    for (extra, field) in [
        ("node_id = \"a b\"\n", "cluster.node_id"),
        ("public_addrs = [\"host\"]\n", "cluster.public_addrs"),
        ("refresh_secs = 0\n", "cluster.refresh_secs"),
        ("node_ttl_secs = 3\n", "cluster.node_ttl_secs"),
        ("lease_ttl_secs = 2\n", "cluster.lease_ttl_secs"),
        ("redis_urls = \"x\"\n", "cluster.redis_urls"),
    ] {
        let err = Config::from_toml_str(&format!("{base}{extra}")).unwrap_err();
        assert!(err.to_string().contains(field), "{extra}: {err}");
    }
    let err =
        Config::from_toml_str("[cluster]\nredis_url = \"http://127.0.0.1\"\nregion = \"eu\"\n")
            .unwrap_err();
    assert!(err.to_string().contains("cluster.redis_url"), "{err}");
    let err = Config::from_toml_str("[cluster]\nredis_url = \"redis://h\"\n").unwrap_err();
    assert!(err.to_string().contains("region"), "{err}");
}

#[test]
fn relay_impairment_is_for_tests_only() {
    let relay = "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\nregion = \"eu\"\n\
                 [cluster.relay]\naddr = \"127.0.0.1:7884\"\nca_cert = \"ca.pem\"\n\
                 node_cert = \"n.pem\"\nnode_key = \"n.key\"\n";
    let plain = Config::from_toml_str(relay).expect("valid");
    let plain = plain.cluster.expect("cluster").relay.expect("relay");
    assert_eq!(plain.impairment, None, "off unless set");

    let impaired = format!("{relay}impairment = {{ delay_ms = 75, loss = 0.01 }}\n");
    let err = Config::from_toml_str(&impaired).unwrap_err().to_string();
    assert!(err.contains("cluster.relay.impairment"), "{err}");
    assert!(err.contains("test_impairment = true"), "{err}");

    let on = format!("[dev]\ntest_impairment = true\n{impaired}");
    let config = Config::from_toml_str(&on).expect("valid with the test switch");
    let impairment = config.cluster.unwrap().relay.unwrap().impairment.unwrap();
    assert_eq!(
        impairment,
        RelayImpairment {
            delay_ms: 75,
            loss: 0.01,
            seed: None
        }
    );

    for (bad, what) in [
        ("{ loss = 1.5 }", "loss"),
        ("{ loss = -0.1 }", "loss"),
        ("{ loss = nan }", "loss"),
        ("{ delay_ms = 20000 }", "delay_ms"),
        ("{ delay = 75 }", "delay"),
    ] {
        let text = format!("[dev]\ntest_impairment = true\n{relay}impairment = {bad}\n");
        let err = Config::from_toml_str(&text).unwrap_err().to_string();
        assert!(err.contains(what), "{bad}: {err}");
    }
}

#[test]
fn sample_cluster_section_parses_once_uncommented() {
    let text = include_str!("../../../aula.sample.toml");
    let (before, section) = text
        .split_once("# [cluster]\n")
        .expect("sample has [cluster]");
    let uncommented: String = section
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") || rest.starts_with("[cluster.") => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_toml_str(&format!("{before}[cluster]\n{uncommented}"))
        .expect("uncommented cluster section parses");
    let cluster = config.cluster.expect("present");
    assert_eq!(cluster.node_id, "eu-west-1");
    let relay = cluster.relay.as_ref().expect("[cluster.relay] present");
    assert_eq!(relay.addr, "eu-west-1.school.example:7884");
    assert_eq!(relay.bind.port(), 7884);
    assert_eq!(
        (
            cluster.node_ttl_secs,
            cluster.refresh_secs,
            cluster.lease_ttl_secs
        ),
        (
            DEFAULT_NODE_TTL_SECS,
            DEFAULT_REFRESH_SECS,
            DEFAULT_LEASE_TTL_SECS
        )
    );
}

#[test]
fn loopback_ephemeral_is_loopback_and_dev() {
    let config = Config::loopback_ephemeral();
    assert!(config.http.bind.ip().is_loopback());
    assert_eq!(config.http.bind.port(), 0);
    assert!(config.rtc.udp_bind.ip().is_loopback());
    assert!(config.is_dev_mode());
}
