//! Where a health check may reach. A check is declared by whoever may register, and the
//! orchestrator runs it from its own network position with its own NATS permissions, so an
//! unrestricted check is a server-side request forgery (read cloud metadata, internal admin
//! ports) and a port scanner. By default a check reaches only its own instance's address and port,
//! as a Kubernetes probe reaches only its pod; anything else needs the operator's allow-list.
//! Link-local and cloud metadata addresses are refused even as an instance's own address, unless a
//! network of the allow-list names them. `nats` checks may request `$SRV.>` (the NATS service
//! API) and the subjects the operator allows, nothing else.
//!
//! Pure decisions: [`CheckTargets::admit`] at registration (refusals name the field), and
//! [`CheckTargets::may_connect`] for each address a check's host name resolves to when it runs
//! (a name that resolved to a harmless address at registration may not later).

use std::net::IpAddr;

use ipnet::IpNet;
use orch_protocol::ProtocolError;
use orch_protocol::health::{CheckKind, CheckSpec};

/// The operator's allow-list of check targets beyond each instance's own address and port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckTargets {
    /// Host names or IP addresses any check may reach, on any port.
    pub hosts: Vec<String>,
    /// Networks any check may reach, on any port. A network that contains link-local or metadata
    /// addresses allows those too: the only way to allow them.
    pub networks: Vec<IpNet>,
    /// Subjects (`*` and `>` wildcards allowed) `nats` checks may request besides `$SRV.>`.
    pub nats_subjects: Vec<String>,
}

/// Subjects every `nats` check may request: the NATS service API (`$SRV.PING`, `$SRV.INFO`, ...).
pub const NATS_SERVICE_API: &str = "$SRV.>";

impl CheckTargets {
    /// Refuses a check of an instance at `address`:`port` that reaches elsewhere than allowed;
    /// `field` is where the check sits in the payload, e.g. `checks[0]`.
    pub fn admit(&self, check: &CheckSpec, address: &str, port: u16, field: &str) -> Result<(), ProtocolError> {
        let f = |name: &str| format!("{field}.{name}");
        match check.kind {
            CheckKind::Http => match check.url.as_deref() {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                    let parsed = reqwest::Url::parse(url)
                        .map_err(|e| ProtocolError::invalid(f("url"), format!("not a valid URL: {e}")))?;
                    let host = parsed.host_str().unwrap_or_default();
                    let target_port = parsed.port_or_known_default().unwrap_or(80);
                    if !parsed.username().is_empty() || parsed.password().is_some() {
                        return Err(ProtocolError::invalid(
                            f("url"),
                            "must not carry credentials; give them in headers, which views never show",
                        ));
                    }
                    self.admit_host(host, target_port, address, port, &f("url"))
                }
                _ => self.admit_host(address, port, address, port, &f("url")),
            },
            CheckKind::Tcp => {
                let host = check.address.as_deref().unwrap_or(address);
                let target_port = check.port.map_or(port, |p| u16::try_from(p).unwrap_or(0));
                let name = if check.address.is_some() { "address" } else { "port" };
                self.admit_host(host, target_port, address, port, &f(name))
            }
            CheckKind::Nats => match check.subject.as_deref() {
                None => Ok(()),
                Some(subject) => {
                    let allowed = std::iter::once(NATS_SERVICE_API)
                        .chain(self.nats_subjects.iter().map(String::as_str))
                        .any(|pattern| subject_matches(pattern, subject));
                    if allowed {
                        Ok(())
                    } else {
                        Err(ProtocolError::invalid(
                            f("subject"),
                            format!(
                                "a nats check may request only {NATS_SERVICE_API} and the subjects an operator \
                                 allows (--check-allow-nats-subjects); {subject:?} is neither"
                            ),
                        ))
                    }
                }
            },
            CheckKind::Exec | CheckKind::Ttl | CheckKind::Lease => Ok(()),
        }
    }

    /// A check may reach `host`:`port` when it is the instance's own address and port, or an
    /// allowed host or network; never a link-local or metadata address unless a network allows it.
    fn admit_host(&self, host: &str, port: u16, own: &str, own_port: u16, field: &str) -> Result<(), ProtocolError> {
        let host = unbracketed(host);
        if let Ok(ip) = host.parse::<IpAddr>()
            && !self.may_connect(ip)
        {
            return Err(ProtocolError::invalid(
                field,
                format!(
                    "{ip} is a link-local or cloud metadata address; checks may reach it only when an operator \
                     allows its network (--check-allow-networks)"
                ),
            ));
        }
        let own_target = host.eq_ignore_ascii_case(unbracketed(own)) && port == own_port;
        if own_target || self.allows_host(host) {
            return Ok(());
        }
        Err(ProtocolError::invalid(
            field,
            format!(
                "a check may reach only its own instance ({own}:{own_port}); {host}:{port} needs an operator's \
                 allow-list (--check-allow-hosts, --check-allow-networks)"
            ),
        ))
    }

    fn allows_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            || host.parse::<IpAddr>().is_ok_and(|ip| self.networks.iter().any(|n| n.contains(&ip)))
    }

    /// Whether a running check may connect to `ip`: anything but link-local and metadata
    /// addresses, which only an allowed network opens.
    pub fn may_connect(&self, ip: IpAddr) -> bool {
        !is_sensitive(ip) || self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv6 host as URLs write it (`[::1]`) without its brackets, so that it parses as an address
/// and compares equal to the same address written bare.
fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Link-local (IPv4 169.254/16, which holds the cloud metadata service 169.254.169.254; IPv6
/// fe80::/10) and the other well-known metadata addresses (AWS IPv6, Alibaba Cloud).
pub fn is_sensitive(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.octets() == [100, 100, 100, 200],
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_sensitive(IpAddr::V4(v4));
            }
            (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == "fd00:ec2::254".parse::<std::net::Ipv6Addr>().unwrap()
        }
    }
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    let mut pattern_tokens = pattern.split('.').peekable();
    while let Some(p) = pattern_tokens.next() {
        if p == ">" && pattern_tokens.peek().is_none() {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(s) if p == "*" || p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> CheckSpec {
        CheckSpec { url: Some(url.into()), ..CheckSpec::new(CheckKind::Http) }
    }

    fn tcp(address: Option<&str>, port: Option<u32>) -> CheckSpec {
        CheckSpec { address: address.map(Into::into), port, ..CheckSpec::new(CheckKind::Tcp) }
    }

    fn nats(subject: &str) -> CheckSpec {
        CheckSpec { subject: Some(subject.into()), ..CheckSpec::new(CheckKind::Nats) }
    }

    fn refused(targets: &CheckTargets, check: &CheckSpec, address: &str, port: u16) -> String {
        let e = targets.admit(check, address, port, "checks[0]").expect_err("refused");
        e.body().field.clone().unwrap_or_default()
    }

    #[test]
    fn a_check_reaches_its_own_instance() {
        let none = CheckTargets::default();
        for check in [
            http("/health"),
            CheckSpec::new(CheckKind::Http),
            http("http://10.0.0.5:8080/health"),
            tcp(None, None),
            tcp(Some("10.0.0.5"), Some(8080)),
        ] {
            none.admit(&check, "10.0.0.5", 8080, "checks[0]").unwrap_or_else(|e| panic!("{check:?}: {e}"));
        }
        none.admit(&http("http://LocalHost:80/"), "localhost", 80, "c").unwrap();
        none.admit(&http("http://[::1]:9000/"), "::1", 9000, "c").unwrap();
    }

    #[test]
    fn anything_else_needs_the_allow_list_and_the_refusal_names_the_field() {
        let none = CheckTargets::default();
        assert_eq!(refused(&none, &http("http://10.0.0.6:8080/"), "10.0.0.5", 8080), "checks[0].url");
        assert_eq!(refused(&none, &http("http://10.0.0.5:22/"), "10.0.0.5", 8080), "checks[0].url");
        assert_eq!(refused(&none, &http("https://internal.example/"), "10.0.0.5", 8080), "checks[0].url");
        assert_eq!(refused(&none, &tcp(Some("10.0.0.9"), None), "10.0.0.5", 8080), "checks[0].address");
        assert_eq!(refused(&none, &tcp(None, Some(22)), "10.0.0.5", 8080), "checks[0].port");

        let allowed = CheckTargets {
            hosts: vec!["internal.example".into()],
            networks: vec!["10.0.0.0/24".parse().unwrap()],
            ..CheckTargets::default()
        };
        allowed.admit(&http("https://internal.example/"), "10.9.9.9", 1, "c").unwrap();
        allowed.admit(&http("http://10.0.0.6:22/"), "10.9.9.9", 1, "c").unwrap();
        allowed.admit(&tcp(Some("10.0.0.200"), Some(5432)), "10.9.9.9", 1, "c").unwrap();
        assert_eq!(refused(&allowed, &tcp(Some("10.0.1.1"), None), "10.9.9.9", 1), "checks[0].address");
    }

    #[test]
    fn metadata_and_link_local_addresses_are_refused_even_as_the_own_address() {
        let none = CheckTargets::default();
        assert_eq!(refused(&none, &http("/latest/meta-data/"), "169.254.169.254", 80), "checks[0].url");
        assert_eq!(refused(&none, &http("http://169.254.169.254/"), "169.254.169.254", 80), "checks[0].url");
        assert_eq!(refused(&none, &tcp(None, None), "fe80::1", 80), "checks[0].port");
        assert_eq!(refused(&none, &http("http://[::ffff:169.254.169.254]/"), "10.0.0.1", 80), "checks[0].url");
        assert_eq!(refused(&none, &http("http://100.100.100.200/"), "100.100.100.200", 80), "checks[0].url");
        let opened = CheckTargets { networks: vec!["169.254.0.0/16".parse().unwrap()], ..CheckTargets::default() };
        opened.admit(&http("http://169.254.169.254/"), "10.0.0.1", 80, "c").unwrap();
        assert!(opened.may_connect("169.254.1.1".parse().unwrap()));
        assert!(!none.may_connect("169.254.1.1".parse().unwrap()));
        assert!(none.may_connect("10.1.1.1".parse().unwrap()));
    }

    #[test]
    fn credentials_in_a_url_are_refused() {
        let none = CheckTargets::default();
        assert_eq!(refused(&none, &http("http://user:secret@10.0.0.5:8080/"), "10.0.0.5", 8080), "checks[0].url");
    }

    #[test]
    fn nats_checks_request_the_service_api_or_allowed_subjects() {
        let none = CheckTargets::default();
        none.admit(&nats("$SRV.PING.web.web-1"), "h", 1, "c").unwrap();
        none.admit(&CheckSpec::new(CheckKind::Nats), "h", 1, "c").unwrap();
        assert_eq!(refused(&none, &nats("$JS.API.STREAM.DELETE.ORCH_EVENTS"), "h", 1), "checks[0].subject");
        assert_eq!(refused(&none, &nats("orch.req.lifecycle.down"), "h", 1), "checks[0].subject");
        let allowed = CheckTargets { nats_subjects: vec!["health.*.ping".into()], ..CheckTargets::default() };
        allowed.admit(&nats("health.web.ping"), "h", 1, "c").unwrap();
        assert_eq!(refused(&allowed, &nats("health.web.ping.x"), "h", 1), "checks[0].subject");
    }

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("$SRV.>", "$SRV.PING"));
        assert!(subject_matches("$SRV.>", "$SRV.PING.a.b"));
        assert!(!subject_matches("$SRV.>", "$SRV"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(!subject_matches("a.*.c", "a.b.c.d"));
        assert!(!subject_matches("a.*", "a"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.bb"));
    }
}
