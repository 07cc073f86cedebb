//! Device rules on cgroup v2: an eBPF program of type CGROUP_DEVICE attached
//! to the container's cgroup, which the kernel asks before every open and
//! mknod of a device node (v1 has the `devices` controller instead).
//!
//! The rules are tried from the last to the first and the first that
//! matches decides, which gives v1's result for lists that begin with a
//! deny of everything and then allow devices (and for allow lists with
//! later denials). A request no rule matches is allowed: without any rule,
//! v2 restricts nothing, as a new v1 cgroup inherits "a *:* rwm".

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// A device rule: allow or deny, type ('a', 'b' or 'c'), major and minor
/// (-1 for any), access ("rwm" letters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub typ: char,
    pub major: i64,
    pub minor: i64,
    pub access: String,
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_W | BPF_MEM
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const AND64_IMM: u8 = 0x57;
const RSH64_IMM: u8 = 0x77;
const JNE_IMM: u8 = 0x55;
const EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// Access letters as the kernel's BPF_DEVCG_ACC_* bits.
fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

/// The program for `rules`. The context is `struct bpf_cgroup_dev_ctx`:
/// access_type (type in the low 16 bits: 1 block, 2 char; access above),
/// major, minor.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),          // r2 = ctx->access_type
        insn(MOV64_REG, 3, 2, 0, 0),      // r3 = r2
        insn(AND64_IMM, 3, 0, 0, 0xffff), // r3 = device type
        insn(MOV64_REG, 4, 2, 0, 0),      // r4 = r2
        insn(RSH64_IMM, 4, 0, 0, 16),     // r4 = requested access
        insn(LDX_W, 5, 1, 4, 0),          // r5 = major
        insn(LDX_W, 6, 1, 8, 0),          // r6 = minor
    ];
    for rule in rules.iter().rev() {
        // Tests that jump past this rule's two final instructions on a
        // mismatch; their offsets are fixed once the block is complete.
        let mut block = Vec::new();
        match rule.typ {
            'b' => block.push(insn(JNE_IMM, 3, 0, 0, 1)),
            'c' => block.push(insn(JNE_IMM, 3, 0, 0, 2)),
            _ => {}
        }
        let allowed = access_bits(&rule.access);
        if allowed != 7 {
            // Every requested bit must be in the rule: (req & !allowed) == 0.
            block.push(insn(MOV64_REG, 7, 4, 0, 0));
            block.push(insn(AND64_IMM, 7, 0, 0, !allowed & 7));
            block.push(insn(JNE_IMM, 7, 0, 0, 0));
        }
        if rule.major >= 0 {
            block.push(insn(JNE_IMM, 5, 0, 0, rule.major as i32));
        }
        if rule.minor >= 0 {
            block.push(insn(JNE_IMM, 6, 0, 0, rule.minor as i32));
        }
        let len = block.len();
        let unconditional = len == 0;
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_IMM {
                // Skip the rest of the tests and the two result instructions.
                ins.off = (len - i - 1 + 2) as i16;
            }
        }
        p.extend(block);
        p.push(insn(MOV64_IMM, 0, 0, 0, i32::from(rule.allow)));
        p.push(insn(EXIT, 0, 0, 0, 0));
        if unconditional {
            // A rule that matches everything ends the program: the
            // verifier refuses instructions no path reaches.
            return p;
        }
    }
    p.push(insn(MOV64_IMM, 0, 0, 0, 1));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `program` on one request: enough of an interpreter for the
    /// instructions it emits.
    fn eval(prog: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> i64 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = i64::from(ctx[(i.off / 4) as usize]),
                MOV64_REG => r[dst] = r[src],
                MOV64_IMM => r[dst] = i64::from(i.imm),
                AND64_IMM => r[dst] &= i64::from(i.imm),
                RSH64_IMM => r[dst] >>= i.imm,
                JNE_IMM => {
                    if r[dst] != i64::from(i.imm) {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn rule(allow: bool, typ: char, major: i64, minor: i64, access: &str) -> Rule {
        Rule {
            allow,
            typ,
            major,
            minor,
            access: access.into(),
        }
    }

    #[test]
    fn deny_all_then_allow_some() {
        let rules = vec![
            rule(false, 'a', -1, -1, "rwm"),
            rule(true, 'c', -1, -1, "m"),
            rule(true, 'b', -1, -1, "m"),
            rule(true, 'c', 1, 3, "rwm"),
            rule(true, 'c', 136, -1, "rwm"),
        ];
        let p = program(&rules);
        let (blk, chr) = (1, 2);
        let (m, r, w) = (1, 2, 4);
        assert_eq!(eval(&p, chr, r | w, 1, 3), 1, "/dev/null");
        assert_eq!(eval(&p, chr, r, 136, 7), 1, "a pts");
        assert_eq!(eval(&p, blk, m, 8, 0), 1, "mknod of a disk");
        assert_eq!(eval(&p, blk, r, 8, 0), 0, "reading a disk");
        assert_eq!(eval(&p, chr, r, 1, 11), 0, "/dev/kmsg");
        assert_eq!(eval(&p, chr, r | m, 1, 3), 1, "null, mknod and read");
    }

    #[test]
    fn nothing_follows_an_unconditional_rule() {
        let p = program(&[
            rule(false, 'a', -1, -1, "rwm"),
            rule(true, 'c', 1, 3, "rwm"),
        ]);
        assert_eq!(p.last().unwrap().code, EXIT);
        // The deny-all, tried last, is the last block: its mov and exit.
        assert_eq!(p[p.len() - 2], insn(MOV64_IMM, 0, 0, 0, 0));
        assert_eq!(eval(&p, 2, 2, 1, 3), 1);
        assert_eq!(eval(&p, 2, 2, 1, 5), 0);
    }

    #[test]
    fn no_rules_allow_everything() {
        assert_eq!(eval(&program(&[]), 1, 2, 8, 0), 1);
    }

    #[test]
    fn later_deny_wins() {
        let p = program(&[rule(true, 'a', -1, -1, "rwm"), rule(false, 'c', 1, 11, "r")]);
        assert_eq!(eval(&p, 2, 2, 1, 11), 0);
        assert_eq!(eval(&p, 2, 4, 1, 11), 1, "only reading was denied");
        assert_eq!(eval(&p, 2, 2, 1, 3), 1);
    }
}
