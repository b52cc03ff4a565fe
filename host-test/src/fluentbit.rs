//! Drives the Fluent Bit core module exactly as Fluent Bit's `filter_wasm` does.
//!
//! Per record: the tag and the record are copied into module memory through the module's
//! `malloc`, each with a trailing NUL; the filter function is called with
//! `(tag, tag_len, time_sec, time_nsec, record, record_len)`; the NUL-terminated string at
//! the returned address is copied out; both copies are released with the module's `free`.
//! WASI preview 1 is provided, with an optional directory preopened as `/etc/newterms`
//! (Fluent Bit's `Accessible_Paths`).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use wasmtime::{Engine, Global, Linker, Memory, Module, Store, TypedFunc, Val};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// The Fluent Bit module built from this checkout's guest (see `build.rs`).
pub const FLUENTBIT_MODULE: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/newterms-fluentbit.wasm"));

type FilterFn = TypedFunc<(i32, i32, i32, i32, i32, i32), i32>;

/// One instance of the module, as one Fluent Bit filter holds it.
pub struct FluentBit {
    store: Store<WasiP1Ctx>,
    memory: Memory,
    malloc: TypedFunc<i32, i32>,
    free: TypedFunc<i32, ()>,
    filter: FilterFn,
    stats: TypedFunc<(), i32>,
    /// A module instrumented by [`crate::wamr_stack::instrument`]: its depth and need.
    meter: Option<(Global, Global)>,
    instance: wasmtime::Instance,
}

/// The module compiled once, ready to instantiate (Fluent Bit compiles or loads it once
/// per filter too; compilation is not part of the per-record cost).
#[derive(Clone)]
pub struct FluentBitModule {
    engine: Engine,
    module: Module,
    linker: Linker<WasiP1Ctx>,
    metered: bool,
}

impl FluentBitModule {
    pub fn compile(module: &[u8]) -> Result<FluentBitModule> {
        FluentBitModule::compile_with(module, false)
    }

    /// Compiled to count the WebAssembly instructions it runs (wasmtime's fuel: about one
    /// unit per instruction): the cost in an interpreter such as Fluent Bit's WAMR, where
    /// every instruction counts, measured without one. See [`FluentBit::instructions`].
    pub fn compile_metered(module: &[u8]) -> Result<FluentBitModule> {
        FluentBitModule::compile_with(module, true)
    }

    fn compile_with(module: &[u8], metered: bool) -> Result<FluentBitModule> {
        if module.is_empty() {
            bail!(
                "this build has no Fluent Bit module: run `.ci/build-guest`, then rebuild the host"
            );
        }
        let mut config = wasmtime::Config::new();
        config.consume_fuel(metered);
        if std::env::var_os("NEWTERMS_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        let module = Module::from_binary(&engine, module).map_err(anyhow::Error::from)?;
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx| cx).map_err(anyhow::Error::from)?;
        Ok(FluentBitModule {
            engine,
            module,
            linker,
            metered,
        })
    }

    /// A new instance calling `function` (Fluent Bit's `Function_Name`); `config_dir`, when
    /// given, is what the module sees as `/etc/newterms`.
    pub fn instantiate(&self, function: &str, config_dir: Option<&Path>) -> Result<FluentBit> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stderr();
        if let Some(dir) = config_dir {
            wasi.preopened_dir(dir, "/etc/newterms", FsPerms::ReadWrite)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("opening {}", dir.display()))?;
        }
        let mut store = Store::new(&self.engine, wasi.build_p1());
        if self.metered {
            store.set_fuel(u64::MAX / 2).map_err(anyhow::Error::from)?;
        }
        let instance = self
            .linker
            .instantiate(&mut store, &self.module)
            .map_err(anyhow::Error::from)
            .context("instantiating the Fluent Bit module")?;
        // A WASI reactor's constructors run once, before any other call (as WAMR does).
        if let Some(init) = instance.get_func(&mut store, "_initialize") {
            init.typed::<(), ()>(&store)
                .and_then(|f| f.call(&mut store, ()))
                .map_err(anyhow::Error::from)
                .context("running the module's _initialize")?;
        }
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| anyhow!("the module exports no memory"))?;
        let typed = |store: &mut Store<WasiP1Ctx>, name: &str| {
            instance
                .get_func(&mut *store, name)
                .ok_or_else(|| anyhow!("the module does not export `{name}`"))
        };
        let malloc = typed(&mut store, "malloc")?
            .typed(&store)
            .map_err(anyhow::Error::from)?;
        let free = typed(&mut store, "free")?
            .typed(&store)
            .map_err(anyhow::Error::from)?;
        let filter = typed(&mut store, function)?
            .typed(&store)
            .map_err(anyhow::Error::from)?;
        let stats = typed(&mut store, "newterms_stats")?
            .typed(&store)
            .map_err(anyhow::Error::from)?;
        let depth = instance.get_global(&mut store, crate::wamr_stack::DEPTH_GLOBAL);
        let need = instance.get_global(&mut store, crate::wamr_stack::NEED_GLOBAL);
        Ok(FluentBit {
            store,
            memory,
            malloc,
            free,
            filter,
            stats,
            meter: depth.zip(need),
            instance,
        })
    }
}

impl FluentBit {
    /// Compiles `module` and instantiates it (see [`FluentBitModule`] to compile once).
    pub fn load(module: &[u8], function: &str, config_dir: Option<&Path>) -> Result<FluentBit> {
        FluentBitModule::compile(module)?.instantiate(function, config_dir)
    }

    /// Copies `bytes` and a NUL into module memory through its `malloc`.
    fn copy_in(&mut self, bytes: &[u8]) -> Result<i32> {
        let len = i32::try_from(bytes.len() + 1).context("input over 2 GiB")?;
        let ptr = self
            .malloc
            .call(&mut self.store, len)
            .map_err(anyhow::Error::from)?;
        if ptr == 0 {
            bail!("the module's malloc returned null for {len} bytes");
        }
        let mem = self.memory.data_mut(&mut self.store);
        let at = ptr as usize;
        mem[at..at + bytes.len()].copy_from_slice(bytes);
        mem[at + bytes.len()] = 0;
        Ok(ptr)
    }

    /// The NUL-terminated string at `ptr`.
    fn read_c_string(&self, ptr: i32) -> Result<Vec<u8>> {
        let mem = self.memory.data(&self.store);
        let tail = mem
            .get(ptr as usize..)
            .ok_or_else(|| anyhow!("result pointer {ptr} out of bounds"))?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| anyhow!("result at {ptr} is not NUL-terminated"))?;
        Ok(tail[..end].to_vec())
    }

    /// One record, as Fluent Bit passes it; `None` passes a null record pointer. Returns
    /// the module's answer (empty: the record is dropped).
    pub fn call(&mut self, tag: &[u8], time: (i32, i32), record: Option<&[u8]>) -> Result<Vec<u8>> {
        self.call_with_fuel(tag, time, record, None)
    }

    /// [`FluentBit::call`] with the filter function (only it, not the copies around it)
    /// given `fuel` instructions in a metered module: a way to stop a call at any
    /// instruction, as a trap in Fluent Bit would. The fuel is restored afterwards.
    pub fn call_with_fuel(
        &mut self,
        tag: &[u8],
        time: (i32, i32),
        record: Option<&[u8]>,
        fuel: Option<u64>,
    ) -> Result<Vec<u8>> {
        let tag_ptr = self.copy_in(tag)?;
        let (rec_ptr, rec_len) = match record {
            Some(r) => (
                self.copy_in(r)?,
                i32::try_from(r.len()).context("record over 2 GiB")?,
            ),
            None => (0, 0),
        };
        let args = (tag_ptr, tag.len() as i32, time.0, time.1, rec_ptr, rec_len);
        let saved = match fuel {
            Some(f) => {
                let left = self.store.get_fuel().map_err(anyhow::Error::from)?;
                self.store.set_fuel(f).map_err(anyhow::Error::from)?;
                Some(left.saturating_sub(f))
            }
            None => None,
        };
        let result = self.filter.call(&mut self.store, args);
        if let Some(rest) = saved {
            let left = self.store.get_fuel().map_err(anyhow::Error::from)?;
            self.store
                .set_fuel(rest + left)
                .map_err(anyhow::Error::from)?;
        }
        // After a trap, as Fluent Bit does: its copies are freed, the record dropped, and
        // the instance goes on serving the next calls.
        let answer = match result {
            Ok(at) => self.read_c_string(at),
            Err(trap) => Err(anyhow::Error::from(trap).context("the filter call trapped")),
        };
        self.free
            .call(&mut self.store, tag_ptr)
            .map_err(anyhow::Error::from)?;
        if rec_ptr != 0 {
            self.free
                .call(&mut self.store, rec_ptr)
                .map_err(anyhow::Error::from)?;
        }
        answer
    }

    /// Calls the module's `malloc` for `size` bytes with `fuel` instructions (a metered
    /// module), as Fluent Bit does before each call: a way to stop it midway.
    pub fn malloc_with_fuel(&mut self, size: i32, fuel: u64) -> Result<i32> {
        let left = self.store.get_fuel().map_err(anyhow::Error::from)?;
        self.store.set_fuel(fuel).map_err(anyhow::Error::from)?;
        let result = self.malloc.call(&mut self.store, size);
        let now = self.store.get_fuel().map_err(anyhow::Error::from)?;
        self.store
            .set_fuel(left.saturating_sub(fuel) + now)
            .map_err(anyhow::Error::from)?;
        result.map_err(anyhow::Error::from)
    }

    /// Calls the filter with each record (a metered module) and sorts what each call cost,
    /// in WebAssembly instructions, by what became of the record.
    pub fn costs<'r>(
        &mut self,
        tag: &[u8],
        records: impl IntoIterator<Item = &'r [u8]>,
    ) -> Result<Costs> {
        let mut costs = Costs::default();
        let mut prefiltered = self.stats()?["prefiltered"].as_u64().unwrap_or(0);
        for r in records {
            let before = self.instructions();
            let out = self.call(tag, (0, 0), Some(r))?;
            let cost = self.instructions() - before;
            let now = self.stats()?["prefiltered"].as_u64().unwrap_or(0);
            let kind = if !out.is_empty() {
                &mut costs.answered
            } else if now > prefiltered {
                &mut costs.rejected
            } else {
                &mut costs.read
            };
            kind.push(cost);
            prefiltered = now;
        }
        for v in [&mut costs.rejected, &mut costs.read, &mut costs.answered] {
            v.sort_unstable();
        }
        Ok(costs)
    }

    /// Releases a block of module memory with the module's `free`, as Fluent Bit does.
    pub fn free(&mut self, ptr: i32) -> Result<()> {
        self.free
            .call(&mut self.store, ptr)
            .map_err(anyhow::Error::from)
    }

    /// The module's counters (`newterms_stats`).
    pub fn stats(&mut self) -> Result<serde_json::Value> {
        let ptr = self
            .stats
            .call(&mut self.store, ())
            .map_err(anyhow::Error::from)?;
        let text = self.read_c_string(ptr)?;
        serde_json::from_slice(&text).context("newterms_stats is not JSON")
    }

    /// WebAssembly instructions run so far (a metered module only; 0 otherwise).
    pub fn instructions(&self) -> u64 {
        self.store
            .get_fuel()
            .map_or(0, |left| (u64::MAX / 2).saturating_sub(left))
    }

    /// For an instrumented module ([`crate::wamr_stack`]): the WAMR stack the next calls
    /// need at most, starting now.
    pub fn reset_stack_need(&mut self) -> Result<()> {
        let (depth, need) = self
            .meter
            .ok_or_else(|| anyhow!("the module is not instrumented"))?;
        let entry = crate::wamr_stack::ENTRY_FRAME as i32;
        depth
            .set(&mut self.store, Val::I32(entry))
            .map_err(anyhow::Error::from)?;
        need.set(&mut self.store, Val::I32(2 * entry))
            .map_err(anyhow::Error::from)?;
        Ok(())
    }

    /// The most WAMR stack, in bytes, that the calls since [`FluentBit::reset_stack_need`]
    /// needed (the frame of WAMR's own entry included).
    pub fn stack_need(&mut self) -> Result<u32> {
        let (_, need) = self
            .meter
            .ok_or_else(|| anyhow!("the module is not instrumented"))?;
        Ok(need.get(&mut self.store).unwrap_i32() as u32)
    }

    /// The value of an exported i32 global.
    pub fn global(&mut self, name: &str) -> Option<i32> {
        let g = self.instance.get_global(&mut self.store, name)?;
        g.get(&mut self.store).i32()
    }

    /// The module's linear memory size in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }
}

/// The instructions of each call of a [`FluentBit::costs`] run, sorted, by outcome.
#[derive(Debug, Default)]
pub struct Costs {
    /// Rejected by the prefilter, before any parse.
    pub rejected: Vec<u64>,
    /// Parsed, and not answered (no match, or a term already seen).
    pub read: Vec<u64>,
    /// Answered: an alert, in the default alert mode.
    pub answered: Vec<u64>,
}

impl Costs {
    /// The `p`-th percentile (0 to 100) of sorted costs; 0 for none.
    pub fn percentile(sorted: &[u64], p: u32) -> u64 {
        match sorted.len() {
            0 => 0,
            n => sorted[((n - 1) * p as usize) / 100],
        }
    }
}

/// `value` as Fluent Bit 5.1.1 writes a record for `filter_wasm` (`Event_Format json`):
/// its encoder (`json_escape_table` in `src/flb_utils.c`) escapes `"` and `\`, the control
/// characters (`\b`, `\t`, `\n`, `\f`, `\r`, else `\u00XX`), 0x7F and, with
/// `json.escape_unicode`, every non-ASCII character (`\uXXXX`, surrogate pairs beyond the
/// BMP); everything else is written as itself. No whitespace between tokens.
pub fn fluent_bit_json(value: &serde_json::Value, escape_unicode: bool) -> String {
    use serde_json::Value;
    fn string(out: &mut String, s: &str, escape_unicode: bool) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\u{c}' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                }
                c if escape_unicode && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn write(out: &mut String, v: &Value, escape_unicode: bool) {
        match v {
            Value::String(s) => string(out, s, escape_unicode),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, item, escape_unicode);
                }
                out.push(']');
            }
            Value::Object(map) => {
                out.push('{');
                for (i, (k, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    string(out, k, escape_unicode);
                    out.push(':');
                    write(out, item, escape_unicode);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(&mut out, value, escape_unicode);
    out
}

/// A Fluent Bit filter module that does nothing: `passthrough` hands each record back as
/// it went in, `drop_all` answers with the empty string (Fluent Bit drops the record).
/// What Fluent Bit itself spends on a wasm filter (its msgpack to JSON, the copies, the
/// call, and for `passthrough` the JSON back to msgpack), for the benchmark to set the
/// module's cost against: newterms drops nearly every record, as `drop_all` does. Its `malloc`
/// bumps a pointer and its `free` starts over: Fluent Bit frees both copies after each
/// call, having copied the answer out.
pub fn passthrough_module() -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection,
        GlobalSection, GlobalType, Instruction as I, MemorySection, MemoryType, Module,
        TypeSection, ValType,
    };
    const BASE: i32 = 1024;
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    types.ty().function([ValType::I32], []);
    types.ty().function([ValType::I32; 6], [ValType::I32]);
    let mut functions = FunctionSection::new();
    for t in [0, 1, 2, 2] {
        functions.function(t);
    }
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(BASE),
    );
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("malloc", ExportKind::Func, 0);
    exports.export("free", ExportKind::Func, 1);
    exports.export("passthrough", ExportKind::Func, 2);
    exports.export("drop_all", ExportKind::Func, 3);
    let mut code = CodeSection::new();
    // malloc(size): the old top; the top moves up by size, rounded to 16, and memory grows
    // to hold it.
    let mut malloc = Function::new([(1, ValType::I32)]);
    for i in [
        I::GlobalGet(0),
        I::LocalGet(0),
        I::I32Add,
        I::I32Const(15),
        I::I32Add,
        I::I32Const(-16),
        I::I32And,
        I::LocalTee(1),
        I::MemorySize(0),
        I::I32Const(16),
        I::I32Shl,
        I::I32GtU,
        I::If(wasm_encoder::BlockType::Empty),
        I::LocalGet(1),
        I::I32Const(16),
        I::I32ShrU,
        I::I32Const(1),
        I::I32Add,
        I::MemorySize(0),
        I::I32Sub,
        I::MemoryGrow(0),
        I::Drop,
        I::End,
        I::GlobalGet(0),
        I::LocalGet(1),
        I::GlobalSet(0),
        I::End,
    ] {
        malloc.instruction(&i);
    }
    code.function(&malloc);
    let mut free = Function::new([]);
    for i in [I::I32Const(BASE), I::GlobalSet(0), I::End] {
        free.instruction(&i);
    }
    code.function(&free);
    let mut pass = Function::new([]);
    for i in [I::LocalGet(4), I::End] {
        pass.instruction(&i);
    }
    code.function(&pass);
    // The address of a zero byte below the allocations: the empty string.
    let mut drop_all = Function::new([]);
    for i in [I::I32Const(16), I::End] {
        drop_all.instruction(&i);
    }
    code.function(&drop_all);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&memories)
        .section(&globals)
        .section(&exports)
        .section(&code);
    module.finish()
}
