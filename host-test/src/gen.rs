//! A realistic CloudTrail stream for benchmarks: real records as templates, deterministic
//! for a seed, any length.
//!
//! Each generated record takes a real CloudTrail record (from `../shared/data/cloudtrail/`)
//! of 0.5 to 4 KB as its shape, then gets a fresh identity, time and ids. About 1% are
//! `sts:GetCallerIdentity` calls; identities are drawn from a pool of every type (IAM users,
//! assumed roles, federated users, root, AWS services without an ARN); about 3% of records
//! arrive up to ten minutes late.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// A small, fast, deterministic generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The generator's knobs.
#[derive(Debug, Clone)]
pub struct Mix {
    pub seed: u64,
    /// Distinct identities in the pool.
    pub identities: u64,
    /// GetCallerIdentity calls per 10,000 records.
    pub gci_per_10k: u64,
    /// Late records per 10,000.
    pub late_per_10k: u64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            seed: 1,
            identities: 500,
            gci_per_10k: 100,
            late_per_10k: 300,
        }
    }
}

/// Real records to take shapes from.
pub struct Templates {
    others: Vec<Value>,
    gci: Vec<Value>,
}

impl Templates {
    /// Every record of 0.5 to 4 KB under `dir` (CloudTrail delivery files or arrays).
    pub fn load(dir: &Path) -> Result<Templates> {
        let mut others = Vec::new();
        let mut gci = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in
                std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let doc: Value = serde_json::from_slice(&std::fs::read(&path)?)
                    .with_context(|| format!("parsing {}", path.display()))?;
                let records = match doc {
                    Value::Object(mut o) => match o.remove("Records") {
                        Some(Value::Array(a)) => a,
                        _ => continue,
                    },
                    Value::Array(a) => a,
                    _ => continue,
                };
                for r in records {
                    let size = r.to_string().len();
                    if !(500..=4096).contains(&size) {
                        continue;
                    }
                    if r["eventName"] == "GetCallerIdentity" {
                        gci.push(r);
                    } else {
                        others.push(r);
                    }
                }
            }
        }
        if others.is_empty() || gci.is_empty() {
            bail!("no usable templates under {}", dir.display());
        }
        // Directory order is not stable: sort, so a seed gives the same stream anywhere.
        others.sort_by_cached_key(|r| r.to_string());
        gci.sort_by_cached_key(|r| r.to_string());
        Ok(Templates { others, gci })
    }
}

/// The identity types of the pool, in proportion.
const TYPES: [&str; 10] = [
    "IAMUser",
    "IAMUser",
    "IAMUser",
    "AssumedRole",
    "AssumedRole",
    "AssumedRole",
    "AssumedRole",
    "FederatedUser",
    "Root",
    "AWSService",
];

fn identity(id: u64) -> Value {
    let account = format!("{:012}", 100_000_000_000 + id % 7);
    match TYPES[(id % TYPES.len() as u64) as usize] {
        "IAMUser" => {
            json!({"type": "IAMUser", "principalId": format!("AIDA{id:016}"), "accountId": account,
            "arn": format!("arn:aws:iam::{account}:user/user-{id}"), "userName": format!("user-{id}")})
        }
        "AssumedRole" => {
            json!({"type": "AssumedRole", "principalId": format!("AROA{id:016}:session-{id}"),
            "accountId": account, "arn": format!("arn:aws:sts::{account}:assumed-role/role-{}/session-{id}", id % 13)})
        }
        "FederatedUser" => {
            json!({"type": "FederatedUser", "principalId": format!("{account}:fed-{id}"),
            "accountId": account, "arn": format!("arn:aws:sts::{account}:federated-user/fed-{id}")})
        }
        "Root" => json!({"type": "Root", "principalId": account, "accountId": account,
            "arn": format!("arn:aws:iam::{account}:root")}),
        _ => json!({"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}),
    }
}

/// The stream: `generate(n)` gives the same `n` records for the same templates and mix.
pub struct Generator<'t> {
    templates: &'t Templates,
    mix: Mix,
    rng: Rng,
    index: u64,
}

/// 2026-01-01T00:00:00Z in seconds.
const START: i64 = 1_767_225_600;

impl<'t> Generator<'t> {
    pub fn new(templates: &'t Templates, mix: Mix) -> Generator<'t> {
        let rng = Rng::new(mix.seed);
        Generator {
            templates,
            mix,
            rng,
            index: 0,
        }
    }

    /// The next record, as one line of JSON.
    pub fn next_record(&mut self) -> String {
        let r = &mut self.rng;
        let is_gci = r.below(10_000) < self.mix.gci_per_10k;
        let pool = if is_gci {
            &self.templates.gci
        } else {
            &self.templates.others
        };
        let mut rec = pool[r.below(pool.len() as u64) as usize].clone();
        let mut secs = START + self.index as i64; // one record a second
        if r.below(10_000) < self.mix.late_per_10k {
            secs -= r.below(600) as i64;
        }
        let who = r.below(self.mix.identities);
        rec["userIdentity"] = identity(who);
        rec["eventTime"] = Value::from(crate::gen::rfc3339(secs));
        rec["eventID"] = Value::from(format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            r.next_u64() as u32,
            r.next_u64() as u16,
            r.below(0x1000),
            r.below(0x1000),
            r.next_u64() & 0xffff_ffff_ffff
        ));
        self.index += 1;
        rec.to_string()
    }

    pub fn generate(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.next_record()).collect()
    }
}

/// `n` `sts:GetCallerIdentity` records (NDJSON) in time order over `days` days (a jitter of
/// up to two minutes, inside the allowed lateness) by `identities` IAM users: half the
/// records from 100 busy ones, half from all, so quiet identities come back after more than
/// the ten-day window and are new again. The stream of the scale-out's tests and benchmark.
pub fn sts_calls(n: usize, identities: u64, days: i64) -> String {
    let mut rng = Rng::new(0x2545_f491);
    let span = days * 86_400;
    let mut out = String::with_capacity(n * 700);
    for i in 0..n {
        let r = rng.next_u64();
        let who = if r % 2 == 0 {
            rng.below(100)
        } else {
            rng.below(identities)
        };
        let t = START + span * i as i64 / n as i64 + rng.below(120) as i64;
        out.push_str(&format!(
            r#"{{"eventVersion":"1.08","userIdentity":{{"type":"IAMUser","principalId":"AIDA{who}","arn":"arn:aws:iam::123456789012:user/u{who}","accountId":"123456789012","userName":"u{who}"}},"eventTime":"{}","eventSource":"sts.amazonaws.com","eventName":"GetCallerIdentity","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.{}","userAgent":"aws-cli/2","requestParameters":null,"responseElements":null,"requestID":"r{i}","eventID":"e{i:08}-{r:016x}","readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012","eventCategory":"Management"}}"#,
            rfc3339(t),
            r % 250
        ));
        out.push('\n');
    }
    out
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    let t = newterms::time::format_timestamp(secs * newterms::time::NANOS_PER_SEC);
    // Drop the milliseconds CloudTrail does not write.
    format!("{}Z", &t[..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_cloudtrail_shaped() {
        assert_eq!(rfc3339(START), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn the_rng_is_deterministic() {
        let a: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::new(8).next_u64(), a[0]);
    }
}
