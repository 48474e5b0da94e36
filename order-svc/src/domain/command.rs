//! The command that starts a saga and the value types it is made of. Each newtype can only be
//! built through its parser, so a `PlaceOrder` that exists is a valid order request.

use shared::contracts;

/// Why a raw value could not become a domain value. The message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

impl InvalidValue {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

/// The characters an identifier may hold: ASCII letters and digits, `.`, `_`, `:` and `-`.
/// Customer ids and SKUs travel to other services, logs, audit trails and dashboards, so they
/// stay plain: nothing that reads differently from what it is.
pub const IDENTIFIER_PATTERN: &str = "^[A-Za-z0-9._:-]+$";

fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// Checks the rules of identifiers: not blank, only [`IDENTIFIER_PATTERN`]'s characters,
/// bounded length (in characters).
pub(crate) fn identifier(what: &str, raw: String, max_chars: usize) -> Result<String, InvalidValue> {
    if raw.trim().is_empty() {
        return Err(InvalidValue::new(format!("{what} must not be blank")));
    }
    if raw.chars().count() > max_chars {
        return Err(InvalidValue::new(format!("{what} must be at most {max_chars} characters")));
    }
    if !raw.chars().all(is_identifier_char) {
        return Err(InvalidValue::new(format!("{what} may contain only ASCII letters, digits, '.', '_', ':' and '-'")));
    }
    Ok(raw)
}

/// Characters that free text (names, addresses) may not hold although they are not control
/// characters: they are invisible or reorder what is shown, so text could read differently
/// from what it is (`"\u{202e}gnp.exe"` shows as `exe.png`; `"sku-tee\u{200b}"` looks like
/// `sku-tee`). Zero-width characters (U+200B–U+200D, U+2060–U+2064, U+FEFF, U+180E), bidi
/// marks, embeddings, overrides and isolates (U+061C, U+200E, U+200F, U+202A–U+202E,
/// U+2066–U+2069), interlinear annotation marks (U+FFF9–U+FFFB) and tag characters
/// (U+E0000–U+E007F).
pub fn is_hidden_char(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Why free text is refused for its characters, if it is.
fn text_characters(what: &str, raw: &str) -> Result<(), InvalidValue> {
    if raw.chars().any(char::is_control) {
        return Err(InvalidValue::new(format!("{what} must not contain control characters")));
    }
    if raw.chars().any(is_hidden_char) {
        return Err(InvalidValue::new(format!(
            "{what} must not contain invisible characters (zero-width, bidirectional or tag characters)"
        )));
    }
    Ok(())
}

/// Checks the rules of a display name: not blank, no surrounding whitespace, no control or
/// invisible characters ([`is_hidden_char`]), bounded length (in characters).
pub(crate) fn display_name(what: &str, raw: String, max_chars: usize) -> Result<String, InvalidValue> {
    if raw.trim().is_empty() {
        return Err(InvalidValue::new(format!("{what} must not be blank")));
    }
    if raw.trim() != raw {
        return Err(InvalidValue::new(format!("{what} must not start or end with whitespace")));
    }
    text_characters(what, &raw)?;
    if raw.chars().count() > max_chars {
        return Err(InvalidValue::new(format!("{what} must be at most {max_chars} characters")));
    }
    Ok(raw)
}

/// The customer placing the order, as payment-svc knows them (e.g. `cust-rich`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomerId(String);

impl CustomerId {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        identifier("customer_id", raw.into(), Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A catalogue item as inventory-svc knows it (e.g. `sku-tee`). Whether it exists is
/// inventory-svc's call (`unknown_sku`), not the API's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sku(String);

impl Sku {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        identifier("sku", raw.into(), Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many units of one SKU: 1 to 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quantity(u32);

impl Quantity {
    pub const MIN: u32 = 1;
    pub const MAX: u32 = 1000;

    /// Takes a wide integer so that negative and huge numbers get the same clear message.
    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        match u32::try_from(raw) {
            Ok(n) if (Self::MIN..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(InvalidValue::new(format!("quantity must be between {} and {}", Self::MIN, Self::MAX))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// An ISO 3166-1 alpha-2 shape: two ASCII letters, stored uppercase (`nl` becomes `NL`).
/// Whether the country is served is shipping-svc's call (`destination_not_served`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(InvalidValue::new("country must be a two-letter ISO 3166-1 code")),
        }
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// An optional free-text address field (name, street, city, postal code): any text without
/// control or invisible characters ([`is_hidden_char`]), at most 200 characters.
fn address_field(what: &str, raw: Option<String>) -> Result<Option<String>, InvalidValue> {
    const MAX_CHARS: usize = 200;
    match raw {
        None => Ok(None),
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) => {
            text_characters(what, &text)?;
            if text.chars().count() > MAX_CHARS {
                return Err(InvalidValue::new(format!("{what} must be at most {MAX_CHARS} characters")));
            }
            Ok(Some(text))
        }
    }
}

/// Where the order ships to. Only the country is required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub country: CountryCode,
    pub name: Option<String>,
    pub line1: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
}

/// The unvalidated optional address fields of a [`Destination`], named so call sites read well.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressLines {
    pub name: Option<String>,
    pub line1: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
}

/// Which address field was invalid, so callers can point at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressField {
    Name,
    Line1,
    City,
    PostalCode,
}

impl AddressField {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressField::Name => "name",
            AddressField::Line1 => "line1",
            AddressField::City => "city",
            AddressField::PostalCode => "postal_code",
        }
    }
}

impl Destination {
    /// Parses every optional field and reports each invalid one.
    pub fn parse(country: CountryCode, lines: AddressLines) -> Result<Self, Vec<(AddressField, InvalidValue)>> {
        let mut errors = Vec::new();
        let mut field = |which: AddressField, raw: Option<String>| {
            address_field(which.as_str(), raw).unwrap_or_else(|err| {
                errors.push((which, err));
                None
            })
        };
        let name = field(AddressField::Name, lines.name);
        let line1 = field(AddressField::Line1, lines.line1);
        let city = field(AddressField::City, lines.city);
        let postal_code = field(AddressField::PostalCode, lines.postal_code);
        if errors.is_empty() { Ok(Self { country, name, line1, city, postal_code }) } else { Err(errors) }
    }

    pub fn to_contract(&self) -> contracts::ShipTo {
        contracts::ShipTo {
            country: self.country.as_str().to_owned(),
            name: self.name.clone(),
            line1: self.line1.clone(),
            city: self.city.clone(),
            postal_code: self.postal_code.clone(),
        }
    }
}

/// One line of a [`PlaceOrder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// The lines of an order: at least one, at most [`OrderItems::MAX_LINES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItems(Vec<OrderItem>);

impl OrderItems {
    pub const MAX_LINES: usize = 100;

    pub fn parse(items: Vec<OrderItem>) -> Result<Self, InvalidValue> {
        if items.is_empty() {
            return Err(InvalidValue::new("items must contain at least one line"));
        }
        if items.len() > Self::MAX_LINES {
            return Err(InvalidValue::new(format!("items must contain at most {} lines", Self::MAX_LINES)));
        }
        Ok(Self(items))
    }

    pub fn as_slice(&self) -> &[OrderItem] {
        &self.0
    }

    pub fn to_contract(&self) -> Vec<contracts::OrderLine> {
        self.0
            .iter()
            .map(|item| contracts::OrderLine { sku: item.sku.as_str().to_owned(), quantity: item.quantity.get() })
            .collect()
    }
}

/// A customer's request to buy: the command that starts a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    pub customer_id: CustomerId,
    pub items: OrderItems,
    pub ship_to: Destination,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_accepts_one_to_one_thousand() {
        assert_eq!(Quantity::parse(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::parse(1000).map(Quantity::get), Ok(1000));
    }

    #[test]
    fn quantity_rejects_zero_negative_and_over_one_thousand() {
        for raw in [0, -1, 1001, i64::from(u32::MAX) + 1, i64::MIN] {
            assert!(Quantity::parse(raw).is_err(), "{raw} was accepted");
        }
    }

    #[test]
    fn country_code_is_uppercased() {
        let code = CountryCode::parse("nl").expect("valid");
        assert_eq!(code.as_str(), "NL");
    }

    #[test]
    fn country_code_rejects_anything_but_two_ascii_letters() {
        for raw in ["", "N", "NLD", "N1", "ñl", " NL", "12"] {
            assert!(CountryCode::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn customer_id_rejects_blank_padded_and_overlong_values() {
        let overlong = "c".repeat(CustomerId::MAX_CHARS + 1);
        for raw in ["", "   ", " cust", "cust\n", overlong.as_str()] {
            assert!(CustomerId::parse(raw).is_err(), "{raw:?} was accepted");
        }
        assert!(CustomerId::parse("cust-rich").is_ok());
    }

    #[test]
    fn ids_hold_only_plain_characters() {
        for raw in ["sku-tee\u{200b}", "\u{202e}gnp.exe", "cust rich", "cüst", "sku/tee", "sku-tee\u{e0041}"] {
            assert!(CustomerId::parse(raw).is_err(), "{raw:?} was accepted as a customer id");
            assert!(Sku::parse(raw).is_err(), "{raw:?} was accepted as a sku");
        }
        for raw in ["cust-rich", "sku_tee.v2", "tenant:42", "A-Z.0_9"] {
            assert!(CustomerId::parse(raw).is_ok() && Sku::parse(raw).is_ok(), "{raw:?} was refused");
        }
    }

    #[test]
    fn address_lines_refuse_invisible_characters_and_keep_other_scripts() {
        let country = CountryCode::parse("NL").expect("valid");
        for hidden in ["Ada\u{200b}", "\u{202e}gnp.exe", "A\u{2066}b", "\u{feff}Ada", "Ada\u{200f}", "x\u{061c}"] {
            let lines = AddressLines { name: Some(hidden.to_owned()), ..AddressLines::default() };
            assert!(Destination::parse(country, lines).is_err(), "{hidden:?} was accepted");
        }
        let lines = AddressLines { name: Some("Zoë Ødegård 山田".to_owned()), ..AddressLines::default() };
        assert!(Destination::parse(country, lines).is_ok());
    }

    #[test]
    fn sku_rejects_blank_values() {
        assert!(Sku::parse("").is_err());
        assert_eq!(Sku::parse("sku-tee").expect("valid").as_str(), "sku-tee");
    }

    #[test]
    fn order_items_need_one_to_one_hundred_lines() {
        let line =
            || OrderItem { sku: Sku::parse("sku-tee").expect("valid"), quantity: Quantity::parse(1).expect("valid") };
        assert!(OrderItems::parse(vec![]).is_err());
        assert!(OrderItems::parse(vec![line(); OrderItems::MAX_LINES]).is_ok());
        assert!(OrderItems::parse(vec![line(); OrderItems::MAX_LINES + 1]).is_err());
    }

    #[test]
    fn blank_address_fields_become_absent_and_overlong_ones_are_reported() {
        let country = CountryCode::parse("DE").expect("valid");
        let parsed = Destination::parse(country, AddressLines { name: Some("  ".into()), ..AddressLines::default() })
            .expect("valid");
        assert_eq!(parsed.name, None);

        let errors =
            Destination::parse(country, AddressLines { city: Some("x".repeat(201)), ..AddressLines::default() })
                .expect_err("overlong city");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, AddressField::City);
    }
}

/// Property tests of every parser here: each accepts exactly what its rule says, keeps what it
/// accepted, and never panics, whatever the input.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Any text, with extra weight on the edges of the rules (whitespace, control characters,
    /// lengths around the limits).
    fn text(max: usize) -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::string::string_regex(&format!("\\PC{{0,{max}}}")).expect("regex"),
            proptest::string::string_regex(&format!("[ \\t]?[a-z\\u{{0}}\\u{{7f}}-]{{0,{max}}}[ \\n]?"))
                .expect("regex"),
            Just(String::new()),
            Just(" ".repeat(3)),
        ]
    }

    /// Text with extra weight on what free text must not hold: control, zero-width, bidi and
    /// tag characters among ordinary letters of several scripts.
    fn hostile_text(max: usize) -> impl Strategy<Value = String> {
        let hostile = prop_oneof![
            Just('\u{200B}'),
            Just('\u{200C}'),
            Just('\u{200D}'),
            Just('\u{200E}'),
            Just('\u{200F}'),
            Just('\u{2060}'),
            Just('\u{FEFF}'),
            Just('\u{061C}'),
            proptest::char::range('\u{202A}', '\u{202E}'),
            proptest::char::range('\u{2066}', '\u{2069}'),
            proptest::char::range('\u{E0000}', '\u{E007F}'),
            Just('\u{0}'),
            Just('\u{7f}'),
        ];
        let ordinary = prop_oneof![
            proptest::char::range('a', 'z'),
            Just(' '),
            Just('é'),
            Just('山'),
            Just('-'),
            Just(':'),
            Just('.')
        ];
        proptest::collection::vec(prop_oneof![4 => ordinary, 1 => hostile], 0..max)
            .prop_map(|chars| chars.into_iter().collect())
    }

    fn identifier_rule(raw: &str, max: usize) -> bool {
        !raw.is_empty()
            && raw.chars().count() <= max
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
    }

    fn free_text_ok(text: &str) -> bool {
        !text.chars().any(|c| c.is_control() || is_hidden_char(c))
    }

    proptest! {
        #[test]
        fn customer_ids_and_skus_parse_exactly_when_they_follow_the_identifier_rule(
            raw in prop_oneof![text(140), hostile_text(20), "[A-Za-z0-9._:-]{1,70}"]
        ) {
            prop_assert_eq!(CustomerId::parse(raw.clone()).is_ok(), identifier_rule(&raw, CustomerId::MAX_CHARS));
            prop_assert_eq!(Sku::parse(raw.clone()).is_ok(), identifier_rule(&raw, Sku::MAX_CHARS));
            if let Ok(id) = CustomerId::parse(raw.clone()) {
                prop_assert_eq!(id.as_str(), raw.as_str());
            }
        }

        #[test]
        fn a_quantity_parses_exactly_within_one_to_one_thousand(raw in any::<i64>()) {
            prop_assert_eq!(Quantity::parse(raw).map(|q| i64::from(q.get())).ok(), (1..=1000).contains(&raw).then_some(raw));
        }

        #[test]
        fn a_country_code_is_two_ascii_letters_upper_cased(raw in text(4)) {
            let expected = raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_alphabetic());
            let parsed = CountryCode::parse(&raw);
            prop_assert_eq!(parsed.is_ok(), expected);
            if let Ok(code) = parsed {
                prop_assert_eq!(code.as_str(), raw.to_ascii_uppercase());
            }
        }

        #[test]
        fn address_lines_are_optional_bounded_and_free_of_control_and_invisible_characters(
            name in proptest::option::of(prop_oneof![text(210), hostile_text(30)]),
            city in proptest::option::of(prop_oneof![text(10), hostile_text(10)]),
        ) {
            let country = CountryCode::parse("NL").expect("country");
            let lines = AddressLines { name: name.clone(), city: city.clone(), ..AddressLines::default() };
            let ok = |v: &Option<String>| {
                v.as_ref().is_none_or(|t| t.trim().is_empty() || (free_text_ok(t) && t.chars().count() <= 200))
            };
            match Destination::parse(country, lines) {
                Ok(destination) => {
                    prop_assert!(ok(&name) && ok(&city));
                    prop_assert_eq!(destination.name.is_some(), name.as_ref().is_some_and(|n| !n.trim().is_empty()));
                }
                Err(errors) => prop_assert_eq!(errors.len(), usize::from(!ok(&name)) + usize::from(!ok(&city))),
            }
        }

        #[test]
        fn an_order_has_one_to_one_hundred_lines(n in 0usize..130) {
            let item = OrderItem { sku: Sku::parse("s").expect("sku"), quantity: Quantity::parse(1).expect("q") };
            prop_assert_eq!(OrderItems::parse(vec![item; n]).is_ok(), (1..=OrderItems::MAX_LINES).contains(&n));
        }
    }
}
