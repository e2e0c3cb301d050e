//! Deep merge of configuration overrides, where `null` deletes a key.

use serde_yaml::Value;

/// Merges `overlay` into `base`: mappings merge key by key, recursively; a
/// null in `overlay` removes the key from `base`; anything else replaces.
/// New keys are appended, so the result's order is still deterministic.
pub fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Mapping(base_map), Value::Mapping(over_map)) => {
            for (key, value) in over_map {
                if value.is_null() {
                    base_map.remove(key);
                    continue;
                }
                match base_map.get_mut(key) {
                    Some(existing) if existing.is_mapping() && value.is_mapping() => {
                        merge(existing, value);
                    }
                    _ => {
                        let mut fresh = value.clone();
                        strip_nulls(&mut fresh);
                        base_map.insert(key.clone(), fresh);
                    }
                }
            }
        }
        (base, overlay) => {
            let mut fresh = overlay.clone();
            strip_nulls(&mut fresh);
            *base = fresh;
        }
    }
}

/// A null inside a newly added mapping has nothing to delete: drop it
/// rather than write `key: null` into the file.
fn strip_nulls(v: &mut Value) {
    if let Value::Mapping(m) = v {
        m.retain(|_, value| !value.is_null());
        for (_, value) in m.iter_mut() {
            strip_nulls(value);
        }
    }
}

/// Converts JSON (module options) to YAML values.
pub fn json_to_yaml(v: &serde_json::Value) -> Value {
    // JSON is a subset of YAML's data model: this cannot fail.
    serde_yaml::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn nested_keys_merge_and_null_deletes() {
        let mut base = y("a: 1\nb:\n  c: 2\n  d: 3\ne: [1, 2]\n");
        merge(
            &mut base,
            &y("b:\n  d: null\n  f: 4\ne: [3]\ng: x\na: null\n"),
        );
        assert_eq!(base, y("b:\n  c: 2\n  f: 4\ne: [3]\ng: x\n"));
    }

    #[test]
    fn order_is_kept_and_new_keys_come_last() {
        let mut base = y("z: 1\na: 2\n");
        merge(&mut base, &y("m: 3\nz: 4\n"));
        assert_eq!(serde_yaml::to_string(&base).unwrap(), "z: 4\na: 2\nm: 3\n");
    }

    #[test]
    fn deleting_a_missing_key_is_a_no_op() {
        let mut base = y("a: 1\n");
        merge(&mut base, &y("b: null\nc:\n  d: null\n  e: 1\n"));
        assert_eq!(base, y("a: 1\nc:\n  e: 1\n"));
    }

    #[test]
    fn a_scalar_replaces_a_mapping_and_back() {
        let mut base = y("a:\n  b: 1\n");
        merge(&mut base, &y("a: off\n"));
        assert_eq!(base, y("a: off\n"));
        merge(&mut base, &y("a:\n  c: 2\n"));
        assert_eq!(base, y("a:\n  c: 2\n"));
    }
}
