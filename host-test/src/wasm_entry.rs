//! Makes every export of the Fluent Bit module start at the top of the shadow stack.
//!
//! Rust code keeps part of its stack in linear memory, below the `__stack_pointer` global
//! (global 0, as wasm-ld lays a module out). Each function lowers the pointer on entry and
//! restores it on return; a call that traps never restores it, and WAMR leaves globals as
//! a trap left them. So after a trap every later call would start lower, until the stack
//! runs into the data below it. Fluent Bit only ever calls the module's exports from
//! outside (never one from within another), so each export can simply start from the
//! pointer's initial value. This rewrites the module so that it does: each exported
//! function gets a wrapper that sets global 0 to its initial value, then calls it.
//!
//! Used by `build.rs` on the module it embeds, and by the tests that check the result.

use wasm_encoder::{
    CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, Module,
    RawSection,
};
use wasmparser::{ExternalKind, FuncType, Operator, Parser, Payload, TypeRef};

/// The module with its exports wrapped, or why it cannot be.
pub fn wrap_exports(module: &[u8]) -> Result<Vec<u8>, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut types: Vec<FuncType> = Vec::new();
    let mut func_types: Vec<u32> = Vec::new();
    let mut imported_globals = 0u32;
    let mut stack_top: Option<i32> = None;
    let mut exports: Vec<(String, ExternalKind, u32)> = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(err)? {
            Payload::TypeSection(r) => {
                for group in r {
                    for t in group.map_err(err)?.into_types() {
                        types.push(t.unwrap_func().clone());
                    }
                }
            }
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    match import.map_err(err)?.ty {
                        TypeRef::Func(t) => func_types.push(t),
                        TypeRef::Global(_) => imported_globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for t in r {
                    func_types.push(t.map_err(err)?);
                }
            }
            Payload::GlobalSection(r) => {
                if let Some(first) = r.into_iter().next() {
                    let g = first.map_err(err)?;
                    let mut ops = g.init_expr.get_operators_reader();
                    if g.ty.mutable && g.ty.content_type == wasmparser::ValType::I32 {
                        if let Ok(Operator::I32Const { value }) = ops.read() {
                            stack_top = Some(value);
                        }
                    }
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.map_err(err)?;
                    exports.push((e.name.to_owned(), e.kind, e.index));
                }
            }
            _ => {}
        }
    }
    if imported_globals != 0 {
        return Err("the module imports globals: global 0 is not its stack pointer".into());
    }
    let Some(top) = stack_top else {
        return Err(
            "global 0 is not a mutable i32 with a constant start (the stack pointer)".into(),
        );
    };
    let wrapped: Vec<(usize, u32)> = exports
        .iter()
        .enumerate()
        .filter(|(_, (_, kind, _))| *kind == ExternalKind::Func)
        .map(|(i, (_, _, f))| (i, *f))
        .collect();
    let first_new = func_types.len() as u32;

    let mut out = Module::new();
    let mut code_section = None;
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(err)?;
        match &payload {
            Payload::FunctionSection(r) => {
                let mut section = FunctionSection::new();
                for t in r.clone() {
                    section.function(t.map_err(err)?);
                }
                for &(_, f) in &wrapped {
                    section.function(func_types[f as usize]);
                }
                out.section(&section);
            }
            Payload::ExportSection(_) => {
                let mut section = ExportSection::new();
                let mut next_wrapper = first_new;
                for (i, (name, kind, index)) in exports.iter().enumerate() {
                    let (kind, index) = match kind {
                        ExternalKind::Func if wrapped.iter().any(|&(w, _)| w == i) => {
                            next_wrapper += 1;
                            (ExportKind::Func, next_wrapper - 1)
                        }
                        ExternalKind::Func => (ExportKind::Func, *index),
                        ExternalKind::Table => (ExportKind::Table, *index),
                        ExternalKind::Memory => (ExportKind::Memory, *index),
                        ExternalKind::Global => (ExportKind::Global, *index),
                        ExternalKind::Tag => (ExportKind::Tag, *index),
                        other => return Err(format!("export kind {other:?} not handled")),
                    };
                    section.export(name, kind, index);
                }
                out.section(&section);
            }
            Payload::CodeSectionStart { .. } => {
                code_section = Some(CodeSection::new());
            }
            Payload::CodeSectionEntry(body) => {
                if let Some(section) = &mut code_section {
                    section.raw(&module[body.range()]);
                }
            }
            Payload::End(_) => {}
            Payload::Version { .. } => {}
            other => {
                // Flush the code section once its entries are over.
                if let Some(mut section) = code_section.take() {
                    add_wrappers(&mut section, &wrapped, &func_types, &types, top)?;
                    out.section(&section);
                }
                if let Some((id, range)) = other.as_section() {
                    out.section(&RawSection {
                        id,
                        data: &module[range],
                    });
                }
            }
        }
    }
    if let Some(mut section) = code_section.take() {
        add_wrappers(&mut section, &wrapped, &func_types, &types, top)?;
        out.section(&section);
    }
    let bytes = out.finish();
    wasmparser::Validator::new()
        .validate_all(&bytes)
        .map_err(|e| format!("the wrapped module does not validate: {e}"))?;
    Ok(bytes)
}

fn add_wrappers(
    section: &mut CodeSection,
    wrapped: &[(usize, u32)],
    func_types: &[u32],
    types: &[FuncType],
    top: i32,
) -> Result<(), String> {
    for &(_, f) in wrapped {
        let ty = types
            .get(func_types[f as usize] as usize)
            .ok_or("a function's type is out of range")?;
        let mut body = Function::new([]);
        body.instruction(&Instruction::I32Const(top));
        body.instruction(&Instruction::GlobalSet(0));
        for p in 0..ty.params().len() as u32 {
            body.instruction(&Instruction::LocalGet(p));
        }
        body.instruction(&Instruction::Call(f));
        body.instruction(&Instruction::End);
        section.function(&body);
    }
    Ok(())
}

/// The initial value of the stack pointer, and whether every exported function starts by
/// setting it to that value (what [`wrap_exports`] makes true).
pub fn exports_reset_stack(module: &[u8]) -> Result<bool, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut imported_funcs = 0u32;
    let mut top = None;
    let mut exported = Vec::new();
    let mut bodies = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(err)? {
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    if let TypeRef::Func(_) = import.map_err(err)?.ty {
                        imported_funcs += 1;
                    }
                }
            }
            Payload::GlobalSection(r) => {
                if let Some(g) = r.into_iter().next() {
                    if let Ok(Operator::I32Const { value }) =
                        g.map_err(err)?.init_expr.get_operators_reader().read()
                    {
                        top = Some(value);
                    }
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.map_err(err)?;
                    if e.kind == ExternalKind::Func {
                        exported.push(e.index);
                    }
                }
            }
            Payload::CodeSectionEntry(body) => bodies.push(body),
            _ => {}
        }
    }
    let Some(top) = top else { return Ok(false) };
    for f in exported {
        let Some(body) = f
            .checked_sub(imported_funcs)
            .and_then(|i| bodies.get(i as usize))
        else {
            return Ok(false);
        };
        let mut ops = body.get_operators_reader().map_err(err)?;
        let first = ops.read().map_err(err)?;
        let second = ops.read().map_err(err)?;
        let resets = matches!(first, Operator::I32Const { value } if value == top)
            && matches!(second, Operator::GlobalSet { global_index: 0 });
        if !resets {
            return Ok(false);
        }
    }
    Ok(true)
}
