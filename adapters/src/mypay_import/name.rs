//! The flow file name `<codIPA>-<IUF>-<version>.zip` (or `.csv`).

use std::str::FromStr;

use snodo_core::dovuto::FlowVersion;

use super::FlowError;

/// Longest IUF MyPay stores.
const MAX_IUF: usize = 35;
/// Longest IPA code MyPay stores (`cod_ipa_ente`).
const MAX_IPA: usize = 80;

/// A parsed flow file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowName {
    /// The ente's IPA code; the caller checks it is the uploading ente (`PAA_IMPORT_ENTE_ERR`).
    pub ipa_code: String,
    /// The flow's unique identifier.
    pub iuf: String,
    pub version: FlowVersion,
    /// `<codIPA>-<IUF>-<version>`: the name without extension, base of every derived file name.
    pub stem: String,
    /// Whether the file is a `.zip` (otherwise a bare `.csv`).
    pub is_zip: bool,
}

impl FlowName {
    /// Parses a file name (no directories); the extension is matched case-insensitively.
    ///
    /// Errors: [`FlowError::BadName`] (`PAA_IMPORT_NOME_FILE_ERR`) for a wrong shape or unsafe
    /// characters, [`FlowError::BadVersion`] (`PAA_IMPORT_FILE_VERSIONE_ERR`) for an unknown
    /// version.
    pub fn parse(file_name: &str) -> Result<Self, FlowError> {
        let bad = |reason: &str| FlowError::BadName {
            name: file_name.to_owned(),
            reason: reason.to_owned(),
        };
        let split = file_name.len().saturating_sub(4);
        let (stem, ext) = match (file_name.get(..split), file_name.get(split..)) {
            (Some(stem), Some(ext)) => (stem, ext),
            _ => return Err(bad("expected a .zip or .csv extension")),
        };
        let is_zip = if ext.eq_ignore_ascii_case(".zip") {
            true
        } else if ext.eq_ignore_ascii_case(".csv") {
            false
        } else {
            return Err(bad("expected a .zip or .csv extension"));
        };
        let parts: Vec<&str> = stem.split('-').collect();
        let [ipa_code, iuf, version] = parts[..] else {
            return Err(bad(&format!(
                "expected <codIPA>-<IUF>-<version> (3 parts separated by '-'), found {} part(s)",
                parts.len()
            )));
        };
        if ipa_code.is_empty() || iuf.is_empty() || version.is_empty() {
            return Err(bad("codIPA, IUF and version must not be empty"));
        }
        let Some(parsed) = FlowVersion::parse(version) else {
            return Err(FlowError::BadVersion {
                name: file_name.to_owned(),
                version: version.to_owned(),
            });
        };
        if !safe_token(ipa_code, MAX_IPA) {
            return Err(bad(&format!(
                "the IPA code must be 1..{MAX_IPA} characters among A-Z a-z 0-9 _ ."
            )));
        }
        if !safe_token(iuf, MAX_IUF) {
            return Err(bad(&format!(
                "the IUF must be 1..{MAX_IUF} characters among A-Z a-z 0-9 _ ."
            )));
        }
        Ok(Self {
            ipa_code: ipa_code.to_owned(),
            iuf: iuf.to_owned(),
            version: parsed,
            stem: stem.to_owned(),
            is_zip,
        })
    }

    /// Name of the CSV entry expected inside the zip: `<stem>.csv`.
    pub fn csv_entry_name(&self) -> String {
        format!("{}.csv", self.stem)
    }
}

impl FromStr for FlowName {
    type Err = FlowError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Non-empty, at most `max` bytes of `[A-Za-z0-9_.]`, not starting with `.`.
fn safe_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(name: &str) -> &'static str {
        FlowName::parse(name).expect_err(name).code()
    }

    #[test]
    fn good_zip_name() {
        let n = FlowName::parse("c_h501-IUF_2024.01-1_4.zip").expect("valid");
        assert_eq!(
            n,
            FlowName {
                ipa_code: "c_h501".into(),
                iuf: "IUF_2024.01".into(),
                version: FlowVersion::V1_4,
                stem: "c_h501-IUF_2024.01-1_4".into(),
                is_zip: true,
            }
        );
        assert_eq!(n.csv_entry_name(), "c_h501-IUF_2024.01-1_4.csv");
    }

    #[test]
    fn csv_extension_any_case() {
        let n = FlowName::parse("R_VENETO-F1-1_0.CSV").expect("valid");
        assert!(!n.is_zip);
        assert_eq!(n.version, FlowVersion::V1_0);
        assert_eq!(n.stem, "R_VENETO-F1-1_0");
        assert!(
            FlowName::parse("R_VENETO-F1-1_2.Zip")
                .expect("valid")
                .is_zip
        );
        let n: FlowName = "a-b-1_3.zip".parse().expect("valid");
        assert_eq!(n.version, FlowVersion::V1_3);
    }

    #[test]
    fn wrong_part_count() {
        assert_eq!(code("ente-1_0.zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("ente-iuf-x-1_0.zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("ente--1_0.zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("-iuf-1_0.zip"), "PAA_IMPORT_NOME_FILE_ERR");
        let msg = FlowName::parse("a-b-c-1_0.zip")
            .expect_err("4 parts")
            .to_string();
        assert_eq!(
            msg,
            "invalid flow file name \"a-b-c-1_0.zip\": expected <codIPA>-<IUF>-<version> \
             (3 parts separated by '-'), found 4 part(s)"
        );
    }

    #[test]
    fn bad_version() {
        assert_eq!(code("ente-iuf-1_5.zip"), "PAA_IMPORT_FILE_VERSIONE_ERR");
        assert_eq!(code("ente-iuf-1.0.zip"), "PAA_IMPORT_FILE_VERSIONE_ERR");
        let e = FlowName::parse("ente-iuf-2_0.csv").expect_err("bad version");
        assert_eq!(
            e.to_string(),
            "invalid flow file name \"ente-iuf-2_0.csv\": unknown version \"2_0\" \
             (supported: 1_0, 1_1, 1_2, 1_3, 1_4)"
        );
    }

    #[test]
    fn bad_extension_and_chars() {
        assert_eq!(code("ente-iuf-1_0.txt"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("ente-iuf-1_0"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code(".zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("ente-iu f-1_0.zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("ente-../x-1_0.zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("dir/ente-iuf-1_0.zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("ente-..-1_0.zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("ente-ìuf-1_0.zip"), "PAA_IMPORT_NOME_FILE_ERR");
        assert_eq!(code("ente-iuf-1_0.zìp"), "PAA_IMPORT_NOME_FILE_ERR");
        let iuf35 = "A".repeat(35);
        assert!(FlowName::parse(&format!("ente-{iuf35}-1_1.zip")).is_ok());
        assert_eq!(
            code(&format!("ente-{iuf35}B-1_1.zip")),
            "PAA_IMPORT_NOME_FILE_ERR"
        );
    }
}
