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
