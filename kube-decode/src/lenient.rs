//! Field types that read what they expect and skip anything else without
//! failing, so a whole LIST page is decoded in one pass: a malformed item
//! (a number where a name belongs, a list for a map) cannot abort the
//! parse of the page, and is reported by what it lacks instead. Only JSON
//! that is not well-formed fails.

use std::{collections::BTreeMap, fmt, marker::PhantomData};

use serde::de::{
    value::MapAccessDeserializer, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess,
    Visitor,
};

/// A value of the wrong JSON type: skipped, and remembered as such.
pub trait Wrong: Default {
    fn wrong() -> Self;
}

/// The visitor methods for every JSON type but the expected ones: `null`
/// is absence (the default), anything else is drained and [`Wrong`].
macro_rules! skip_everything_else {
    ($out:ty) => {
        fn visit_bool<E>(self, _: bool) -> Result<$out, E> {
            Ok(Wrong::wrong())
        }
        fn visit_i64<E>(self, _: i64) -> Result<$out, E> {
            Ok(Wrong::wrong())
        }
        fn visit_u64<E>(self, _: u64) -> Result<$out, E> {
            Ok(Wrong::wrong())
        }
        fn visit_f64<E>(self, _: f64) -> Result<$out, E> {
            Ok(Wrong::wrong())
        }
        fn visit_unit<E>(self) -> Result<$out, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> Result<$out, E> {
            Ok(Default::default())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$out, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Wrong::wrong())
        }
    };
}

/// A string; `None` for null or absent; `.1` when it was another type.
#[derive(Debug, Default)]
pub struct Str(pub Option<String>, pub bool);

impl Wrong for Str {
    fn wrong() -> Self {
        Str(None, true)
    }
}

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Str, E> {
                Ok(Str(Some(s.to_string()), false))
            }
            fn visit_string<E>(self, s: String) -> Result<Str, E> {
                Ok(Str(Some(s), false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Str, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Str::wrong())
            }
            skip_everything_else!(Str);
        }
        d.deserialize_any(V)
    }
}

/// A boolean; `false` for null or absent; `.1` when it was another type.
#[derive(Debug, Default)]
pub struct Flag(pub bool, pub bool);

impl Wrong for Flag {
    fn wrong() -> Self {
        Flag(false, true)
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Flag, E> {
                Ok(Flag(b, false))
            }
            fn visit_str<E>(self, _: &str) -> Result<Flag, E> {
                Ok(Flag::wrong())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Flag, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Flag::wrong())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Flag, E> {
                Ok(Flag::wrong())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Flag, E> {
                Ok(Flag::wrong())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Flag, E> {
                Ok(Flag::wrong())
            }
            fn visit_unit<E>(self) -> Result<Flag, E> {
                Ok(Flag::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Flag, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Flag::wrong())
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether the member is present with a value other than `null`.
#[derive(Debug, Default)]
pub struct Present(pub bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Present;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Present, E> {
                Ok(Present(false))
            }
            fn visit_none<E>(self) -> Result<Present, E> {
                Ok(Present(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Present, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Present(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Present, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Present(true))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object decoded as `T`, or `None` for any other JSON value. `T`'s
/// fields must all be lenient themselves (and unknown fields ignored), so
/// that decoding an object as `T` cannot fail.
#[derive(Debug)]
pub struct Obj<T>(pub Option<T>, pub bool);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None, false)
    }
}

impl<T> Wrong for Obj<T> {
    fn wrong() -> Self {
        Obj(None, true)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| Obj(Some(t), false))
            }
            fn visit_str<E>(self, _: &str) -> Result<Obj<T>, E> {
                Ok(Obj::wrong())
            }
            skip_everything_else!(Obj<T>);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The string-valued members of an object whose keys start with a prefix;
/// every other member is skipped unbuilt (its key is not even copied).
#[derive(Debug)]
pub struct Prefixed<const P: usize>(pub BTreeMap<String, String>, pub bool);

impl<const P: usize> Default for Prefixed<P> {
    fn default() -> Self {
        Prefixed(BTreeMap::new(), false)
    }
}

impl<const P: usize> Wrong for Prefixed<P> {
    fn wrong() -> Self {
        Prefixed(BTreeMap::new(), true)
    }
}

/// The prefixes [`Prefixed`] can select, by index.
pub const PREFIXES: [&str; 1] = ["rds.csi.srvlab.io/"];

impl<'de, const P: usize> Deserialize<'de> for Prefixed<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A key, kept only when it has the prefix.
        struct Key<const P: usize>(Option<String>);
        impl<'de, const P: usize> Deserialize<'de> for Key<P> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct K<const P: usize>;
                impl<'de, const P: usize> Visitor<'de> for K<P> {
                    type Value = Key<P>;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("a key")
                    }
                    fn visit_str<E>(self, s: &str) -> Result<Key<P>, E> {
                        Ok(Key(s.starts_with(PREFIXES[P]).then(|| s.to_string())))
                    }
                }
                d.deserialize_str(K::<P>)
            }
        }
        struct V<const P: usize>;
        impl<'de, const P: usize> Visitor<'de> for V<P> {
            type Value = Prefixed<P>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Prefixed<P>, A::Error> {
                let (mut out, mut wrong) = (BTreeMap::new(), false);
                while let Some(Key(key)) = map.next_key::<Key<P>>()? {
                    match key {
                        Some(k) => match map.next_value::<Str>()? {
                            Str(Some(v), _) => {
                                out.insert(k, v);
                            }
                            Str(None, bad) => wrong |= bad,
                        },
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Prefixed(out, wrong))
            }
            fn visit_str<E>(self, _: &str) -> Result<Prefixed<P>, E> {
                Ok(Prefixed::wrong())
            }
            skip_everything_else!(Prefixed<P>);
        }
        d.deserialize_any(V::<P>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct Probe {
        name: Str,
        on: Flag,
        here: Present,
        inner: Obj<Inner>,
        annotations: Prefixed<0>,
    }

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct Inner {
        x: Str,
    }

    #[test]
    fn every_json_type_in_every_field_decodes() {
        let values = [
            "null",
            "true",
            "1",
            "-1",
            "1.5",
            "\"s\"",
            "[]",
            "[1,{\"a\":[2]}]",
            "{}",
            "{\"a\":{\"b\":[null]}}",
        ];
        for v in values {
            let doc = format!(
                r#"{{"name":{v},"on":{v},"here":{v},"inner":{v},"annotations":{v},"other":{v}}}"#
            );
            let p: Probe = serde_json::from_str(&doc).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert_eq!(p.name.0.is_some(), v == "\"s\"", "{v}");
            assert_eq!(
                p.name.1,
                !matches!(v, "null" | "\"s\""),
                "{v}: wrong type noticed"
            );
            assert_eq!(p.on.0, v == "true", "{v}");
            assert_eq!(p.here.0, v != "null", "{v}");
            assert_eq!(p.inner.1, !v.starts_with('{') && v != "null", "{v}");
        }
    }

    #[test]
    fn only_prefixed_string_members_are_kept() {
        let p: Probe = serde_json::from_str(
            r#"{"annotations":{"rds.csi.srvlab.io/attached-node":"n1","other/x":"y","rds.csi.srvlab.io/n":3},"inner":{"x":"v","y":[1]}}"#,
        )
        .unwrap();
        assert_eq!(p.annotations.0.len(), 1);
        assert_eq!(p.annotations.0["rds.csi.srvlab.io/attached-node"], "n1");
        assert_eq!(p.inner.0.unwrap().x.0.as_deref(), Some("v"));
        assert!(
            serde_json::from_str::<Probe>(r#"{"name":"x""#).is_err(),
            "truncated JSON still fails"
        );
    }
}
