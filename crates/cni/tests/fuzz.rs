//! Fuzz targets of what CNI plugins and configuration files hand the agent (issue 16 item 3):
//! ADD results (seeds `fuzz/seeds/cni-result`: 1.0, 0.4 and legacy 0.2 formats) and network
//! configurations (seeds `fuzz/seeds/cni-conf`: a conflist and a single-plugin conf), plus the
//! `--pod-cidr` subnet parser. No panic; the pod IP is one of the result's addresses with a
//! prefix that fits it; an accepted configuration has a name, a version and plugins with types.

#[path = "../../../fuzz/mutate.rs"]
mod mutate;

use std::path::Path;

use staticlet_cni::builtin::Subnet;
use staticlet_cni::{AttachResult, NetworkConfig};

#[test]
fn cni_result() {
    let seeds = mutate::seeds(&["fuzz/seeds/cni-result"]);
    let runs = mutate::Runs::new("cni_result");
    bolero::check!()
        .with_iterations(mutate::iterations(15_000))
        .with_max_len(mutate::MAX_RECIPE)
        .for_each(|recipe: &[u8]| {
            runs.hit();
            let data = mutate::mutate(&seeds, recipe);
            let Ok(raw) = serde_json::from_slice(&data) else {
                return;
            };
            let result = AttachResult::from_raw(raw);
            for (ip, prefix) in &result.ips {
                assert!(
                    *prefix <= if ip.is_ipv4() { 32 } else { 128 },
                    "{ip}/{prefix}"
                );
            }
            if let Some(ip) = result.pod_ip() {
                runs.accept();
                assert!(result.ips.iter().any(|(a, _)| *a == ip));
            }
        });
}

#[test]
fn cni_config() {
    let seeds = mutate::seeds(&["fuzz/seeds/cni-conf"]);
    let runs = mutate::Runs::new("cni_config");
    bolero::check!()
        .with_iterations(mutate::iterations(15_000))
        .with_max_len(mutate::MAX_RECIPE)
        .for_each(|recipe: &[u8]| {
            runs.hit();
            let data = mutate::mutate(&seeds, recipe);
            let file = Path::new("/etc/cni/net.d/10-fuzz.conflist");
            for parsed in [
                NetworkConfig::from_conflist_bytes(&data, file),
                NetworkConfig::from_conf_bytes(&data, file),
            ]
            .into_iter()
            .flatten()
            {
                runs.accept();
                assert!(!parsed.name.is_empty() && !parsed.cni_version.is_empty());
                assert!(!parsed.plugins.is_empty());
                assert!(
                    parsed.plugins.iter().all(|p| !p.plugin_type.is_empty()),
                    "{parsed:?}"
                );
            }
            if let Ok(text) = std::str::from_utf8(&data) {
                for word in text.split(['"', ' ', ',']) {
                    if let Ok(s) = Subnet::parse(word) {
                        assert!((8..=28).contains(&s.prefix), "{word}");
                    }
                }
            }
        });
}
