//! How much of WAMR's interpreter stack a module's calls need, measured by running it.
//!
//! Fluent Bit runs the module in WAMR's fast interpreter, whose stack (`Wasm_Stack_Size`,
//! 8 KiB by default) holds one frame per active call: a 40-byte header and four bytes for
//! each cell (a 32-bit slot; 64-bit values take two) of the function's parameters,
//! locals, constants (one slot per distinct value) and operand slots. Pushing a frame
//! needs twice its size free; a call into a host function pushes a small frame too.
//!
//! [`instrument`] rewrites a module so that every function adds its frame to a global
//! on entry and takes it off on exit, and keeps the highest need seen in another; the
//! module then runs anywhere (wasmtime here), and [`StackMeter`] reads the need of each
//! call. A frame's operand slots are estimated from the validator's operand stack, which
//! counts values WAMR keeps in their locals or its constant table too: the estimate is
//! on the high side (checked against the real Fluent Bit by the tests).

use std::collections::HashSet;

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{BlockType, ConstExpr, ExportKind, GlobalType, Instruction, ValType};
use wasmparser::{FuncType, Operator, Parser, Payload, TypeRef};

/// The frame header of WAMR's fast interpreter on a 64-bit host.
const HEADER: u32 = 40;
/// The frame WAMR pushes before the called function (`wasm_interp_call_wasm`).
pub const ENTRY_FRAME: u32 = 48;

/// What each function's frame costs.
#[derive(Debug, Clone)]
pub struct Frames {
    /// Bytes per defined function, in index order after the imported ones.
    pub defined: Vec<u32>,
    /// Bytes of the frame of a call into each imported function.
    pub imported: Vec<u32>,
}

fn cells(t: wasmparser::ValType) -> u32 {
    match t {
        wasmparser::ValType::I64 | wasmparser::ValType::F64 => 2,
        wasmparser::ValType::V128 => 4,
        _ => 1,
    }
}

/// Each function's frame, from the module's code.
pub fn frames(module: &[u8]) -> Result<Frames, String> {
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    let mut types: Vec<FuncType> = Vec::new();
    let mut func_types: Vec<u32> = Vec::new();
    let mut imported = Vec::new();
    let mut defined = Vec::new();
    let mut validator = wasmparser::Validator::new();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(err)?;
        match &payload {
            Payload::TypeSection(r) => {
                for group in r.clone() {
                    for t in group.map_err(err)?.into_types() {
                        types.push(t.unwrap_func().clone());
                    }
                }
            }
            Payload::ImportSection(r) => {
                for import in r.clone().into_imports() {
                    if let TypeRef::Func(t) = import.map_err(err)?.ty {
                        let params: u32 =
                            types[t as usize].params().iter().map(|p| cells(*p)).sum();
                        imported.push(HEADER + 4 * params.max(2));
                        func_types.push(t);
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for t in r.clone() {
                    func_types.push(t.map_err(err)?);
                }
            }
            _ => {}
        }
        if let wasmparser::ValidPayload::Func(v, body) = validator.payload(&payload).map_err(err)? {
            let index = imported.len() + defined.len();
            let mut fv = v.into_validator(Default::default());
            let ty = &types[func_types[index] as usize];
            let params: u32 = ty.params().iter().map(|t| cells(*t)).sum();
            let mut locals = 0;
            let mut reader = body.get_locals_reader().map_err(err)?;
            for _ in 0..reader.get_count() {
                let (n, t) = reader.read().map_err(err)?;
                locals += n * cells(t);
                fv.define_locals(0, n, t).map_err(err)?;
            }
            let mut c32 = HashSet::new();
            let mut c64 = HashSet::new();
            let mut most = 0;
            let mut ops = body.get_operators_reader().map_err(err)?;
            while !ops.eof() {
                let (op, offset) = ops.read_with_offset().map_err(err)?;
                match &op {
                    Operator::I32Const { value } => {
                        c32.insert(*value as u32);
                    }
                    Operator::F32Const { value } => {
                        c32.insert(value.bits());
                    }
                    Operator::I64Const { value } => {
                        c64.insert(*value as u64);
                    }
                    Operator::F64Const { value } => {
                        c64.insert(value.bits());
                    }
                    _ => {}
                }
                fv.op(offset, &op).map_err(err)?;
                let height = fv.operand_stack_height() as usize;
                let on_stack: u32 = (0..height)
                    .map(|i| match fv.get_operand_type(i) {
                        Some(Some(t)) => cells(t),
                        _ => 1,
                    })
                    .sum();
                most = most.max(on_stack);
            }
            let consts = c32.len() as u32 + 2 * c64.len() as u32;
            defined.push(HEADER + 4 * (consts + params + locals + most + 1));
        }
    }
    Ok(Frames { defined, imported })
}

/// The names of the globals [`instrument`] adds and exports.
pub const DEPTH_GLOBAL: &str = "__wamr_stack_depth";
pub const NEED_GLOBAL: &str = "__wamr_stack_need";

struct Instrument {
    /// Keep, per defined function, the deepest stack it was entered at (`__wamr_entry_N`).
    per_function: bool,
    frames: Frames,
    types: Vec<FuncType>,
    func_types: Vec<u32>,
    globals: u32,
    next_function: u32,
}

impl Instrument {
    fn depth(&self) -> u32 {
        self.globals
    }
    fn need(&self) -> u32 {
        self.globals + 1
    }

    /// `need = max(need, depth + extra)`.
    fn note(&self, f: &mut wasm_encoder::Function, extra: u32) {
        f.instruction(&Instruction::GlobalGet(self.depth()));
        f.instruction(&Instruction::I32Const(extra as i32));
        f.instruction(&Instruction::I32Add);
        f.instruction(&Instruction::GlobalGet(self.need()));
        f.instruction(&Instruction::I32GtU);
        f.instruction(&Instruction::If(BlockType::Empty));
        f.instruction(&Instruction::GlobalGet(self.depth()));
        f.instruction(&Instruction::I32Const(extra as i32));
        f.instruction(&Instruction::I32Add);
        f.instruction(&Instruction::GlobalSet(self.need()));
        f.instruction(&Instruction::End);
    }

    fn add_depth(&self, f: &mut wasm_encoder::Function, delta: i32) {
        f.instruction(&Instruction::GlobalGet(self.depth()));
        f.instruction(&Instruction::I32Const(delta));
        f.instruction(&Instruction::I32Add);
        f.instruction(&Instruction::GlobalSet(self.depth()));
    }
}

impl Reencode for Instrument {
    type Error = String;

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error<String>> {
        reencode::utils::parse_global_section(self, globals, section)?;
        let extra = if self.per_function {
            2 + self.frames.defined.len()
        } else {
            2
        };
        for _ in 0..extra {
            globals.global(
                GlobalType {
                    val_type: ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &ConstExpr::i32_const(0),
            );
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<String>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        exports.export(DEPTH_GLOBAL, ExportKind::Global, self.depth());
        exports.export(NEED_GLOBAL, ExportKind::Global, self.need());
        if self.per_function {
            for i in 0..self.frames.defined.len() as u32 {
                exports.export(
                    &format!("__wamr_entry_{i}"),
                    ExportKind::Global,
                    self.need() + 1 + i,
                );
            }
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error<String>> {
        let defined = self.next_function as usize;
        self.next_function += 1;
        let index = self.frames.imported.len() + defined;
        let frame = self.frames.defined[defined];
        let ty = self.types[self.func_types[index] as usize].clone();
        let block = match ty.results() {
            [] => BlockType::Empty,
            [t] => BlockType::Result(self.val_type(*t)?),
            _ => {
                return Err(reencode::Error::UserError(
                    "a function with several results".into(),
                ))
            }
        };
        let mut f = self.new_function_with_parsed_locals(&func)?;
        // Entry: the frame is pushed, needing twice its size free.
        self.note(&mut f, 2 * frame);
        if self.per_function {
            let g = self.need() + 1 + defined as u32;
            f.instruction(&Instruction::GlobalGet(self.depth()));
            f.instruction(&Instruction::GlobalGet(g));
            f.instruction(&Instruction::I32GtU);
            f.instruction(&Instruction::If(BlockType::Empty));
            f.instruction(&Instruction::GlobalGet(self.depth()));
            f.instruction(&Instruction::GlobalSet(g));
            f.instruction(&Instruction::End);
        }
        self.add_depth(&mut f, frame as i32);
        // The body inside a block, so that a branch out of the body still passes the exit.
        f.instruction(&Instruction::Block(block));
        let mut reader = func.get_operators_reader()?;
        let imported = self.frames.imported.len() as u32;
        while !reader.eof() {
            let op = reader.read()?;
            match &op {
                Operator::Return => self.add_depth(&mut f, -(frame as i32)),
                Operator::ReturnCall { .. } | Operator::ReturnCallIndirect { .. } => {
                    return Err(reencode::Error::UserError("tail calls".into()))
                }
                Operator::Call { function_index } if *function_index < imported => {
                    let host = self.frames.imported[*function_index as usize];
                    self.note(&mut f, 2 * host);
                }
                _ => {}
            }
            let last = reader.eof();
            f.instruction(&self.instruction(op)?);
            if last {
                // The body's own `end` closed the block; exit, then end the function.
                self.add_depth(&mut f, -(frame as i32));
                f.instruction(&Instruction::End);
            }
        }
        code.function(&f);
        Ok(())
    }
}

/// The module with its frames counted (see the module docs).
pub fn instrument(module: &[u8]) -> Result<Vec<u8>, String> {
    instrument_with(module, false)
}

/// [`instrument`], also keeping for each defined function N the deepest stack it was
/// entered at, in an exported global `__wamr_entry_N` (for finding what needs the most).
pub fn instrument_with(module: &[u8], per_function: bool) -> Result<Vec<u8>, String> {
    let frames = frames(module)?;
    let mut types = Vec::new();
    let mut func_types = Vec::new();
    let mut globals = 0;
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(|e| e.to_string())? {
            Payload::TypeSection(r) => {
                for group in r {
                    for t in group.map_err(|e| e.to_string())?.into_types() {
                        types.push(t.unwrap_func().clone());
                    }
                }
            }
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    match import.map_err(|e| e.to_string())?.ty {
                        TypeRef::Func(t) => func_types.push(t),
                        TypeRef::Global(_) => globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for t in r {
                    func_types.push(t.map_err(|e| e.to_string())?);
                }
            }
            Payload::GlobalSection(r) => globals += r.count(),
            _ => {}
        }
    }
    let mut it = Instrument {
        per_function,
        frames,
        types,
        func_types,
        globals,
        next_function: 0,
    };
    let mut out = wasm_encoder::Module::new();
    it.parse_core_module(&mut out, Parser::new(0), module)
        .map_err(|e| format!("{e:?}"))?;
    let bytes = out.finish();
    wasmparser::Validator::new()
        .validate_all(&bytes)
        .map_err(|e| format!("the instrumented module does not validate: {e}"))?;
    Ok(bytes)
}
