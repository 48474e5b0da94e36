//! Property tests of the parsers: country codes, carrier names and the network seed accept
//! exactly what their rules say and never panic.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn a_country_code_is_two_ascii_letters_after_trimming(raw in "\\PC{0,4}|[ ]?[a-zA-Z]{2}[ ]?") {
        let trimmed = raw.trim();
        let expected = trimmed.len() == 2 && trimmed.chars().all(|c| c.is_ascii_alphabetic());
        match CountryCode::try_from(raw.as_str()) {
            Ok(code) => {
                prop_assert!(expected);
                prop_assert_eq!(code.as_str(), trimmed.to_ascii_uppercase());
            }
            Err(_) => prop_assert!(!expected),
        }
    }

    #[test]
    fn a_carrier_name_is_one_to_forty_of_the_allowed_characters(raw in "\\PC{0,45}|[a-z0-9_-]{0,42}") {
        let expected = (1..=40).contains(&raw.len())
            && raw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        prop_assert_eq!(CarrierName::try_from(raw.as_str()).is_ok(), expected);
    }

    #[test]
    fn any_text_as_a_network_seed_parses_or_fails_without_panicking(raw in "\\PC{0,80}") {
        let _ = NetworkSeed::from_json(&raw);
    }

    #[test]
    fn a_seed_with_generated_carriers_round_trips(
        names in proptest::collection::btree_set("[a-z]{1,8}", 1..4),
        capacity in any::<u32>(),
    ) {
        let seed = NetworkSeed {
            carriers: names
                .iter()
                .map(|n| CarrierSeed {
                    name: CarrierName::try_from(n.as_str()).expect("name"),
                    countries: BTreeSet::from([CountryCode::try_from("NL").expect("code")]),
                    daily_capacity: capacity,
                })
                .collect(),
        };
        let json = serde_json::to_string(&seed).expect("serialize");
        prop_assert_eq!(NetworkSeed::from_json(&json).expect("parse"), seed);
    }
}
