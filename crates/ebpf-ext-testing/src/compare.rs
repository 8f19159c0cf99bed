//! Comparing the reports of the two targets: equal reports mean equal behaviour.

use core::fmt::Debug;

/// `Ok` if `linked` and `image` are equal; otherwise the first differing line of their
/// pretty-printed forms, with both lines.
///
/// # Errors
/// The difference, as a message that names the line.
pub fn reports<R: PartialEq + Debug>(linked: &R, image: &R) -> Result<(), String> {
    if linked == image {
        return Ok(());
    }
    let (a, b) = (format!("{linked:#?}"), format!("{image:#?}"));
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let line = (0..a.len().max(b.len()))
        .find(|&i| a.get(i) != b.get(i))
        .unwrap_or(0);
    Err(format!(
        "the linked crate and the image behave differently; report line {}:\n  linked: {}\n  image:  {}",
        line + 1,
        a.get(line).map_or("<end of report>", |l| l.trim()),
        b.get(line).map_or("<end of report>", |l| l.trim()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Report {
        name: &'static str,
        values: Vec<u32>,
    }

    #[test]
    fn equal_reports_compare_equal() {
        let r = Report {
            name: "x",
            values: vec![1, 2],
        };
        assert_eq!(reports(&r, &r), Ok(()));
    }

    #[test]
    fn a_difference_names_its_line() {
        let a = Report {
            name: "x",
            values: vec![1, 2],
        };
        let b = Report {
            name: "x",
            values: vec![1, 3],
        };
        let error = reports(&a, &b).expect_err("they differ");
        assert!(error.contains("line 5"), "{error}");
        assert!(
            error.contains("linked: 2,") && error.contains("image:  3,"),
            "{error}"
        );
    }
}
