//! A client address as text, formatted on the stack.
//!
//! Ring-hash picks and per-client rate limits key on the client's address as
//! text (`192.0.2.7`, `2001:db8::1`), the form users see in logs and the one
//! the ring positions were always computed from. Formatting into a `String`
//! cost a heap allocation per request on those paths; this holds the text in
//! a fixed buffer sized for the longest address `IpAddr` displays.

use std::fmt::{self, Write};
use std::net::IpAddr;

/// The longest text `IpAddr` displays:
/// `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`.
const MAX_LEN: usize = 45;

/// `ip` exactly as `ip.to_string()` spells it, without the allocation.
#[derive(Clone, Copy)]
pub struct IpText {
    bytes: [u8; MAX_LEN],
    len: u8,
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut text = IpText {
            bytes: [0; MAX_LEN],
            len: 0,
        };
        match ip {
            // The common case, and the one `core::fmt` made costly: four
            // integer formats through the formatting machinery per request.
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        let _ = text.write_str(".");
                    }
                    let _ = text.write_str(itoa::Buffer::new().format(octet));
                }
            }
            // Cannot fail: MAX_LEN holds every address's text (see `write_str`).
            IpAddr::V6(_) => {
                let _ = write!(text, "{ip}");
            }
        }
        text
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for IpText {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Write for IpText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let start = usize::from(self.len);
        let end = start + s.len();
        let slot = self.bytes.get_mut(start..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = u8::try_from(end).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn the_longest_addresses_fit() {
        for ip in [
            IpAddr::V6(Ipv6Addr::new(
                0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
            )),
            IpAddr::V6(Ipv4Addr::new(255, 255, 255, 255).to_ipv6_mapped()),
            IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)),
        ] {
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
        }
        let widest: IpAddr = "1111:2222:3333:4444:5555:6666:255.255.255.255"
            .parse()
            .expect("valid address");
        assert!(widest.to_string().len() <= MAX_LEN);
        assert_eq!(IpText::new(widest).as_bytes(), widest.to_string().as_bytes());
    }

    proptest! {
        #[test]
        fn spells_every_address_as_display_does(v4 in any::<u32>(), v6 in any::<u128>()) {
            for ip in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
                let (text, display) = (IpText::new(ip), ip.to_string());
                prop_assert_eq!(text.as_bytes(), display.as_bytes());
            }
        }
    }
}
