"""Child process of tests/test_vram.py: our models under a real ComfyUI's partial loading (ModelPatcher.load with a
budget of 20 % of the weights), on the CPU.

ComfyUI runs in CPU mode here, so load and offload device are both the CPU; two ways make the partial load
observable anyway:

* ``meta``: the load device is the meta device.  The modules ComfyUI loads move there; the ones it offloads stay on
  the CPU, and a forward pass on meta inputs fails ("same device") for every offloaded layer that is not
  cast-enabled -- exactly the crash a GPU sees.  Shapes propagate, so the forward runs without real data.
* ``sampler``: the real sampler (MultiViewWorker / animate_2d) with ComfyUI's ``load_models_gpu`` deciding the
  budget from a patched free-memory figure (20 % of the weights beside the activation estimate), against the same
  run fully loaded: the latents must agree.

Prints one JSON line, {scenario: result}.  argv: repo, comfy_dir, scratch, scenarios (comma-separated: placement,
meta, sampler, advise, too_big).
"""
import importlib
import json
import os
import sys
import types

repo, comfy_dir, scratch, scenario = sys.argv[1:5]
sys.path.insert(0, comfy_dir)
import torch  # noqa: E402
from comfy.cli_args import args  # noqa: E402

args.cpu = True
import comfy.model_management as mm  # noqa: E402

pkg = types.ModuleType("charshot_pack")
pkg.__path__ = [repo]
sys.modules["charshot_pack"] = pkg
core_loading = importlib.import_module("charshot_pack.charactershot_core.models.loading")
core_text = importlib.import_module("charshot_pack.charactershot_core.models.text")
tiny = importlib.import_module("charshot_pack.charactershot_core.models.tiny")
nodes_models = importlib.import_module("charshot_pack.nodes.models")
vram = importlib.import_module("charshot_pack.nodes.vram")

root = os.path.join(scratch, "tiny")
if not os.path.isdir(os.path.join(root, "charactershot")):
    tiny.make_tiny_set(root, views=5)
off = os.path.join(root, "charactershot", "CharacterShot-tiny")
off2d = os.path.join(root, "charactershot", "Character2D-tiny")
fp8_file = os.path.join(root, "diffusion_models", "charactershot_tiny_fp8.safetensors")
torch.manual_seed(0)


def load(kind):
    if kind == "4d":
        return core_loading.load_model_4d(off, None, torch.float32)
    if kind == "4d_fp8":
        return core_loading.load_model_4d(off, None, torch.float32, weight_storage="fp8_e4m3fn")
    if kind == "4d_fp8_file":
        return core_loading.load_model_4d(fp8_file, off, torch.float32, weight_storage="fp8_e4m3fn")
    if kind == "2d":
        return core_loading.load_model_2d(off2d, torch.float32)
    if kind == "vae":
        return core_loading.load_vae(off, torch.float32)
    raise ValueError(kind)


def module_of(kind, obj):
    if kind == "vae":
        return obj.vae
    if kind == "t5":
        return obj.model
    return obj.transformer


def partial_load(patcher, fraction, device=None):
    """What load_models_gpu does once it has a budget: LoadedModel.model_load(lowvram_model_memory); fraction None
    is --novram (ComfyUI's budget of 0.1 bytes: nothing loaded)."""
    if device is not None:
        patcher.load_device = torch.device(device)
    loaded = mm.LoadedModel(patcher)
    budget = 0.1 if fraction is None else int(patcher.model_size() * fraction)
    loaded.model_load(budget)
    return loaded, budget


def placement(patcher):
    """(names loaded, names left for casting, names neither) over the modules holding weights."""
    loaded, cast, neither = [], [], []
    for n, m in patcher.model.named_modules():
        if not vram.holds_weights(m):
            continue
        if getattr(m, "comfy_patched_weights", False):
            loaded.append(n)
        elif getattr(m, "comfy_cast_weights", False):
            cast.append(n)
        else:
            neither.append(n)
    return loaded, cast, neither


def scenario_placement():
    out = {}
    kinds = ["4d", "4d_fp8", "4d_fp8_file", "2d", "vae", "t5"]
    for kind in kinds:
        obj = core_text.T5FolderEncoder(off, dtype=torch.float32) if kind == "t5" else load(kind)
        mod = module_of(kind, obj)
        patcher = nodes_models.make_patcher(mod, "text_encoder" if kind == "t5" else "diffusion")
        _, budget = partial_load(patcher, 0.2)
        loaded, cast, neither = placement(patcher)
        fp8 = [n for n, m in mod.named_modules() if type(m).__name__.endswith("FP8Linear")]
        out[kind] = {"loaded": len(loaded), "cast": len(cast), "neither": neither[:10],
                     "loaded_bytes": patcher.loaded_size(), "budget": budget, "size": patcher.model_size(),
                     "fp8_layers": len(fp8), "fp8_cast_enabled": all(hasattr(mod.get_submodule(n),
                                                                             "comfy_cast_weights") for n in fp8),
                     "not_offloadable": vram.not_offloadable(mod)[:10]}
    return out


def scenario_meta():
    out = {}
    for kind in ["4d", "4d_fp8", "2d", "4d_novram"]:
        novram = kind.endswith("_novram")
        kind = kind.replace("_novram", "")
        obj = load(kind)
        mod = obj.transformer
        patcher = nodes_models.make_patcher(mod)
        partial_load(patcher, None if novram else 0.2, "meta")
        c = obj.config
        on_cpu = sum(1 for p in mod.parameters() if p.device.type == "cpu")
        on_meta = sum(1 for p in mod.parameters() if p.device.type == "meta")
        h, w, f = 8, 12, 3
        try:
            with torch.no_grad():
                if kind.startswith("4d"):
                    v = 2
                    x = torch.empty(2, v, f, c["in_channels"], h, w, device="meta")
                    enc = torch.empty(2, v, 16, c["text_embed_dim"], device="meta")
                    cam = torch.empty(2, v, (h // 2) * (w // 2), c["num_attention_heads"] * c["attention_head_dim"],
                                      device="meta")
                    from charshot_pack.charactershot_core.models.rope import rotary_embeddings
                    base = (c["sample_height"] // 2, c["sample_width"] // 2)
                    rope = (rotary_embeddings(f, h // 2, w // 2, c["attention_head_dim"], base, "meta"),
                            rotary_embeddings(v, h // 2, w // 2, c["attention_head_dim"], base, "meta"))
                    y = mod(x, enc, torch.tensor([500, 500], device="meta"), cam, image_rotary_emb=rope[0],
                            view_rotary_emb=rope[1])
                else:
                    from charshot_pack.charactershot_core.models.rope import rotary_embeddings
                    x = torch.empty(2, f, c["in_channels"], h, w, device="meta")
                    enc = torch.empty(2, 16, c["text_embed_dim"], device="meta")
                    base = (c["sample_height"] // 2, c["sample_width"] // 2)
                    rope = rotary_embeddings(f, h // 2, w // 2, c["attention_head_dim"], base, "meta")
                    y = mod(hidden_states=x, encoder_hidden_states=enc, timestep=torch.tensor([500, 500],
                            device="meta"), image_rotary_emb=rope, return_dict=False)[0]
            result = {"ok": True, "shape": list(y.shape), "device": str(y.device)}
        except Exception as e:  # noqa: BLE001 - reported to the test
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}
        result.update(params_on_cpu=on_cpu, params_on_meta=on_meta)
        out[kind + ("_novram" if novram else "")] = result
    # a module with weights of its own *and* children with weights (ComfyUI's load list skips such a module)
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.full((8,), 2.0))
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.lin(x) * self.scale

    net = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Linear(64, 8), Scaled())
    patcher = nodes_models.make_patcher(net)
    partial_load(patcher, 0.5, "meta")
    try:
        y = net(torch.empty(2, 8, device="meta"))
        out["skipped_by_loader"] = {"ok": True, "device": str(y.device),
                                    "not_offloadable": vram.not_offloadable(net)}
    except Exception as e:  # noqa: BLE001 - reported to the test
        out["skipped_by_loader"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}
    # the official-folder T5 (transformers' T5EncoderModel, with its own T5LayerNorm), as the text node runs it
    enc = core_text.T5FolderEncoder(off, dtype=torch.float32)
    patcher = nodes_models.make_patcher(enc.model, "text_encoder")
    partial_load(patcher, 0.2, "meta")
    enc.device = patcher.load_device
    on_cpu = sum(1 for p in enc.model.parameters() if p.device.type == "cpu")
    on_meta = sum(1 for p in enc.model.parameters() if p.device.type == "meta")
    try:
        y = enc.encode(["a character dancing"])
        result = {"ok": True, "shape": list(y.shape), "device": str(y.device)}
    except Exception as e:  # noqa: BLE001 - reported to the test
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}
    result.update(params_on_cpu=on_cpu, params_on_meta=on_meta)
    out["t5"] = result
    return out


def scenario_sampler(which):
    S = importlib.import_module("charshot_pack.charactershot_core.sampling")
    sampling_nodes = importlib.import_module("charshot_pack.nodes.sampling")
    real_load = mm.load_models_gpu
    loads = []

    def gpu_like(free_fn):
        """Make ComfyUI treat the CPU as a GPU with ``free_fn(memory_required, patcher)`` bytes free."""
        saved = (mm.is_device_cpu, mm.vram_state, mm.get_free_memory)
        mm.is_device_cpu = lambda d: False
        mm.vram_state = mm.VRAMState.NORMAL_VRAM
        mm.get_free_memory = free_fn
        return saved

    def restore(saved):
        mm.is_device_cpu, mm.vram_state, mm.get_free_memory = saved

    def load_at_20_percent(models, memory_required=0, **kw):
        """load_models_gpu with free memory = ComfyUI's reserve + 20 % of the weights being loaded."""
        p = models[0]
        base = max(mm.minimum_inference_memory(), memory_required + mm.extra_reserved_memory())
        budget = int(0.2 * p.model_size())
        saved = gpu_like(lambda dev=None, torch_free_too=False: base + budget - p.loaded_size())
        try:
            real_load(models, memory_required=memory_required, **kw)
        finally:
            restore(saved)
        loaded, cast, neither = placement(p)
        loads.append({"memory_required": int(memory_required), "loaded_bytes": p.loaded_size(),
                      "size": p.model_size(), "cast": len(cast), "neither": neither[:5]})

    g = torch.Generator().manual_seed(0)
    h, w, f = 64, 96, 5
    views = torch.randint(0, 255, (3, h, w, 3), generator=g, dtype=torch.uint8)
    poses = torch.randint(0, 255, (f, h, w, 3), generator=g, dtype=torch.uint8)
    text = torch.randn(2, 1, 226, 32, generator=g)
    def run(partial, storage="default"):
        model = core_loading.load_model_4d(off, None, torch.float32, weight_storage=storage)
        vae = core_loading.load_vae(off, torch.float32)
        model.patcher = nodes_models.make_patcher(model.transformer)
        vae.patcher = nodes_models.make_patcher(vae.vae, "vae")
        job = S.MultiViewJob(views, poses, poses[0], text[0], text[1], seed=3, steps=2, guidance=6.0,
                             group_size=3)
        shape = sampling_nodes.job_shape(3, job.latent_frames + 1, h, w, 6.0, False)
        use_vae, use_transformer = sampling_nodes._device_hooks(model, vae, shape, h, w)
        worker = S.MultiViewWorker(model, vae, use_vae=use_vae, use_transformer=use_transformer)
        mm.load_models_gpu = load_at_20_percent if partial else real_load
        try:
            res = worker.run_group(job, 0)
        finally:
            mm.load_models_gpu = real_load
            mm.unload_all_models()
        return res, model, vae, shape

    if which == "advise":
        # a budget where the activation estimate alone is above what is free (the old guard refused here) but a
        # fully offloaded run fits: ComfyUI's partial loading carries it, with the same result as a full load
        import logging
        M = importlib.import_module("charshot_pack.charactershot_core.sampling.memory")
        records = []
        handler = logging.Handler()
        handler.emit = lambda rec: records.append(rec.getMessage())
        logging.getLogger("CharacterShot").addHandler(handler)
        logging.getLogger("CharacterShot").setLevel(logging.INFO)
        full, model, vae, shape = run(False)
        need = M.transformer_activation_bytes(model.config, shape, model.dtype)
        floor = M.Floor(M.transformer_counted_bytes(model.config, shape, model.dtype),
                        M.largest_layer_bytes(model.transformer, model.dtype), vram.offload_streams())
        reserve = mm.extra_reserved_memory()
        free = reserve + need // 2
        loads.clear()
        advised = []

        def load_at_fixed_free(models, memory_required=0, **kw):
            p = models[0]
            saved = gpu_like(lambda dev=None, torch_free_too=False: free - p.loaded_size())
            try:
                real_load(models, memory_required=memory_required, **kw)
            finally:
                restore(saved)
            loaded, cast, neither = placement(p)
            loads.append({"memory_required": int(memory_required), "loaded_bytes": p.loaded_size(),
                          "size": p.model_size(), "cast": len(cast), "neither": neither[:5]})

        saved = gpu_like(lambda dev=None, torch_free_too=False: free)
        try:
            plan = sampling_nodes.log_plan(model, vae, shape, h, w)
        finally:
            restore(saved)
        real_load_fn = real_load
        model2 = core_loading.load_model_4d(off, None, torch.float32)
        vae2 = core_loading.load_vae(off, torch.float32)
        model2.patcher = nodes_models.make_patcher(model2.transformer)
        vae2.patcher = nodes_models.make_patcher(vae2.vae, "vae")
        job = S.MultiViewJob(views, poses, poses[0], text[0], text[1], seed=3, steps=2, guidance=6.0, group_size=3)
        use_vae, use_transformer = sampling_nodes._device_hooks(model2, vae2, shape, h, w)
        mm.load_models_gpu = load_at_fixed_free
        saved = gpu_like(lambda dev=None, torch_free_too=False: free)  # what the guard reads before loading
        try:
            worker = S.MultiViewWorker(model2, vae2, use_vae=use_vae, use_transformer=use_transformer)
            part = worker.run_group(job, 0)
            raised = None
        except Exception as e:  # noqa: BLE001 - reported to the test
            part, raised = None, f"{type(e).__name__}: {e}"
        finally:
            restore(saved)
            mm.load_models_gpu = real_load_fn
            mm.unload_all_models()
        out = {"need": need, "floor": floor.total, "free": free, "reserve": reserve, "raised": raised,
               "plan": plan, "log": records, "loads": list(loads),
               "max_diff": None if part is None else (full.latents - part.latents).abs().max().item(),
               "frames_diff": None if part is None else (full.frames.int() - part.frames.int()).abs().max().item()}
    elif which == "sampler":
        out = {}
        for storage in ("default", "fp8_e4m3fn"):
            loads.clear()
            full, _, _, _ = run(False, storage)
            part, model, vae, shape = run(True, storage)
            out[storage] = {"max_diff": (full.latents - part.latents).abs().max().item(),
                            "frames_diff": (full.frames.int() - part.frames.int()).abs().max().item(),
                            "finite": bool(torch.isfinite(part.latents).all()), "loads": list(loads)}
    else:
        model = core_loading.load_model_4d(off, None, torch.float32)
        model.patcher = nodes_models.make_patcher(model.transformer)
        vae = core_loading.load_vae(off, torch.float32)
        vae.patcher = nodes_models.make_patcher(vae.vae, "vae")
        shape = sampling_nodes.job_shape(5, 8, 480, 720, 6.0, False)
        M = importlib.import_module("charshot_pack.charactershot_core.sampling.memory")
        need = M.transformer_activation_bytes(model.config, shape, model.dtype)
        floor = M.Floor(M.transformer_counted_bytes(model.config, shape, model.dtype),
                        M.largest_layer_bytes(model.transformer, model.dtype), vram.offload_streams())
        free = floor.total // 2  # even with every weight offloaded the call cannot fit
        saved = gpu_like(lambda dev=None, torch_free_too=False: free)
        try:
            plan = sampling_nodes.log_plan(model, vae, shape, 480, 720)
            _, use_transformer = sampling_nodes._device_hooks(model, vae, shape, 480, 720)
            try:
                use_transformer()
                out = {"raised": None}
            except Exception as e:  # noqa: BLE001 - reported to the test
                out = {"raised": type(e).__name__, "message": str(e)}
            vae.tiling = False
            use_vae, _ = sampling_nodes._device_hooks(model, vae, shape, 480 * 8, 720 * 8)
            try:
                use_vae()
            except Exception as e:  # noqa: BLE001 - reported to the test
                out["vae_raised"], out["vae_message"] = type(e).__name__, str(e)
        finally:
            restore(saved)
        out.update(plan=plan, need=need, free=free, loaded=model.patcher.loaded_size(), floor=floor.total,
                   floor_text=floor.text())
    return out


results = {}
for name in scenario.split(","):
    if name == "placement":
        results[name] = scenario_placement()
    elif name == "meta":
        results[name] = scenario_meta()
    else:
        results[name] = scenario_sampler(name)
print(json.dumps(results))
