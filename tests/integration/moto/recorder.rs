//! What moto's recorder saw: the operations, and the parameters, of the requests a test's run made. The
//! recorder keeps every request moto serves (`scripts/lib.sh` starts moto with it on), so tests find
//! theirs by a marker only they use (their unique ids).

/// The AWS operations moto's recorder saw in requests that mention `marker` (ids are unique per test),
/// from line `from` of the recording on. ElastiCache speaks the query protocol (`Action=` in the body);
/// KMS and Secrets Manager name the operation in `X-Amz-Target`.
pub(crate) fn recorded_operations(marker: &str, from: usize) -> Vec<String> {
    let mut operations = Vec::new();
    for (r, body) in recorded_requests(marker, from) {
        let action = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_string);
        let target = header(&r, "x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .map(str::to_string);
        operations.extend(action.or(target));
    }
    operations
}

/// The recorded requests that mention `marker`, from line `from` on: each record and its decoded body.
fn recorded_requests(marker: &str, from: usize) -> Vec<(serde_json::Value, String)> {
    every_request(from)
        .into_iter()
        .filter(|(r, body)| {
            body.contains(marker) || r["url"].as_str().unwrap_or("").contains(marker)
        })
        .collect()
}

/// Every recorded request from line `from` on: each record and its decoded body.
fn every_request(from: usize) -> Vec<(serde_json::Value, String)> {
    use base64::Engine;
    let path = recording_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    for line in text.lines().skip(from) {
        let Ok(r) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let raw = r["body"].as_str().unwrap_or("");
        let body = if r["body_encoded"] == true {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            raw.to_string()
        };
        out.push((r, body));
    }
    out
}

/// A header of a recorded request, by name in any case.
fn header<'a>(r: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    r["headers"]
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))?
        .1
        .as_str()
}

/// Every action, as IAM names it (`service:Operation`), of the requests from line `from` on that a process
/// started with `AWS_SDK_UA_APP_ID=app` sent: the SDK puts `app/<app>` in their user agent, so requests
/// that do not name the test's ids (a key described by alias, a DNS change by its id) are found too. The
/// service is the signature's; the operation is `Action=` (query protocol), `X-Amz-Target` (JSON
/// protocol), or, for Route53's REST API, the method and path. Actions that need no permission are left out.
pub(crate) fn recorded_actions_of_app(
    app: &str,
    from: usize,
) -> std::collections::BTreeSet<String> {
    let tag = format!("app/{app}");
    let mut actions = std::collections::BTreeSet::new();
    for (r, body) in every_request(from) {
        if !header(&r, "user-agent").is_some_and(|ua| ua.split(' ').any(|p| p == tag)) {
            continue;
        }
        // Credential=KEY/DATE/REGION/SERVICE/aws4_request
        let service = header(&r, "authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(3))
            .unwrap_or("unknown")
            .to_string();
        let operation = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_string)
            .or_else(|| {
                header(&r, "x-amz-target")
                    .and_then(|t| t.rsplit('.').next())
                    .map(str::to_string)
            })
            .or_else(|| route53_operation(&r))
            .unwrap_or_else(|| format!("unknown {}", r["url"]));
        actions.insert(format!("{service}:{operation}"));
    }
    // The evidence pack asks STS who is calling; AWS documents that GetCallerIdentity needs no
    // permission (and works even when denied), so no policy lists it.
    actions.remove("sts:GetCallerIdentity");
    actions
}

/// For each region (the signature's), the operations of the requests from line `from` on that a process
/// started with `AWS_SDK_UA_APP_ID=app` sent.
pub(crate) fn recorded_regions_of_app(
    app: &str,
    from: usize,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let tag = format!("app/{app}");
    let mut regions: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for (r, body) in every_request(from) {
        if !header(&r, "user-agent").is_some_and(|ua| ua.split(' ').any(|p| p == tag)) {
            continue;
        }
        let region = header(&r, "authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').nth(2))
            .unwrap_or("unknown")
            .to_string();
        let operation = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_string)
            .or_else(|| {
                header(&r, "x-amz-target")
                    .and_then(|t| t.rsplit('.').next())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("unknown {}", r["url"]));
        regions.entry(region).or_default().insert(operation);
    }
    regions
}

/// The Route53 operations ecmigrate sends, from the REST method and path.
fn route53_operation(r: &serde_json::Value) -> Option<String> {
    let url = r["url"].as_str()?;
    let path = url.split("://").nth(1)?.split_once('/')?.1;
    let path = path.split('?').next()?.trim_end_matches('/');
    let method = r["method"].as_str()?;
    let operation = match (method, path.split('/').collect::<Vec<_>>().as_slice()) {
        ("GET", [_, "hostedzone", _, "rrset"]) => "ListResourceRecordSets",
        ("POST", [_, "hostedzone", _, "rrset"]) => "ChangeResourceRecordSets",
        ("GET", [_, "change", _]) => "GetChange",
        _ => return None,
    };
    Some(operation.to_string())
}

/// The parameters of every recorded ElastiCache `action` (query protocol: a form body) that mentions
/// `marker`, from line `from` on, decoded; `AuthToken` is replaced by `<redacted>` so no test prints it.
pub(crate) fn recorded_params(
    marker: &str,
    action: &str,
    from: usize,
) -> Vec<std::collections::BTreeMap<String, String>> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    recorded_requests(marker, from)
        .into_iter()
        .map(|(_, body)| {
            body.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| {
                    let v = if k == "AuthToken" {
                        "<redacted>".into()
                    } else {
                        decode(v)
                    };
                    (decode(k), v)
                })
                .collect::<std::collections::BTreeMap<String, String>>()
        })
        .filter(|p| p.get("Action").map(String::as_str) == Some(action))
        .collect()
}

pub(crate) fn recording_path() -> String {
    std::env::var("ECMIGRATE_TEST_MOTO_RECORDING")
        .expect("ECMIGRATE_TEST_MOTO_RECORDING: scripts/test.sh starts moto with its recorder on")
}

pub(crate) fn recording_len() -> usize {
    std::fs::read_to_string(recording_path())
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Operations that change something (AWS names them with these verbs).
pub(crate) fn is_mutating(operation: &str) -> bool {
    const VERBS: [&str; 14] = [
        "Create", "Delete", "Modify", "Put", "Update", "Disable", "Enable", "Add", "Remove",
        "Reboot", "Increase", "Decrease", "Copy", "Tag",
    ];
    VERBS.iter().any(|v| operation.starts_with(v))
}
