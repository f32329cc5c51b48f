//! A small arithmetic evaluator for the `math` capability: `+ - * / % ^`,
//! parentheses, unary minus and decimal numbers. Bounded in length and depth,
//! so hostile model output cannot exhaust the worker.

/// Longest accepted expression, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 1000;
const MAX_DEPTH: usize = 64;

/// Evaluates an expression; errors are short human-readable strings for the model.
pub fn evaluate(expr: &str) -> Result<f64, String> {
    if expr.len() > MAX_EXPRESSION_BYTES {
        return Err(format!("expression longer than {MAX_EXPRESSION_BYTES} bytes"));
    }
    let mut p = Parser { s: expr.as_bytes(), i: 0, depth: 0 };
    let v = p.sum()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected character at position {}", p.i + 1));
    }
    if !v.is_finite() {
        return Err("result is not a finite number".into());
    }
    Ok(v)
}

/// Formats a result the way a person would write it: `42`, not `42.0`.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut v = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let r = self.product()?;
            v = if op == b'+' { v + r } else { v - r };
        }
        Ok(v)
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut v = self.power()?;
        while let Some(op @ (b'*' | b'/' | b'%')) = self.peek() {
            self.i += 1;
            let r = self.power()?;
            if op != b'*' && r == 0.0 {
                return Err("division by zero".into());
            }
            v = match op {
                b'*' => v * r,
                b'/' => v / r,
                _ => v % r,
            };
        }
        Ok(v)
    }

    /// Right-associative exponent.
    fn power(&mut self) -> Result<f64, String> {
        let base = self.unary()?;
        if self.peek() == Some(b'^') {
            self.i += 1;
            let exp = self.nested(Self::power)?;
            return Ok(base.powf(exp));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'-') => {
                self.i += 1;
                Ok(-self.nested(Self::unary)?)
            }
            Some(b'+') => {
                self.i += 1;
                self.nested(Self::unary)
            }
            _ => self.atom(),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<f64, String>) -> Result<f64, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression nested too deeply".into());
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let v = self.nested(Self::sum)?;
                if self.peek() != Some(b')') {
                    return Err("missing closing parenthesis".into());
                }
                self.i += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.i;
                while self.i < self.s.len() && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'.') {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| "invalid number")?;
                text.parse::<f64>().map_err(|_| format!("invalid number {text:?}"))
            }
            Some(_) => Err(format!("unexpected character at position {}", self.i + 1)),
            None => Err("unexpected end of expression".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        assert_eq!(evaluate("6*7").unwrap(), 42.0);
        assert_eq!(evaluate(" 2 + 3 * (4 - 1) ").unwrap(), 11.0);
        assert_eq!(evaluate("2^3^2").unwrap(), 512.0);
        assert_eq!(evaluate("-3 + 10 % 4").unwrap(), -1.0);
        assert_eq!(format_number(evaluate("7/2").unwrap()), "3.5");
        assert_eq!(format_number(42.0), "42");
    }

    #[test]
    fn hostile_input() {
        assert!(evaluate("1/0").is_err());
        assert!(evaluate("(1").is_err());
        assert!(evaluate("1 +").is_err());
        assert!(evaluate("abc").is_err());
        assert!(evaluate(&"(".repeat(500)).is_err());
        assert!(evaluate(&"-".repeat(500)).is_err());
        assert!(evaluate(&"1+".repeat(600)).is_err());
        assert!(evaluate("10^400").is_err());
    }
}
