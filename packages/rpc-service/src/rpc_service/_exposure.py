"""Exposure rules: which attributes of a local object the peer may reach.

Owns the decision for every remote attribute access (get, set, delete, call-by-name, dir)
and the *type descriptor* sent to the peer the first time an object of a type crosses
(its exposed method names and the special methods it supports, so proxies call methods
in one round trip). Private and dunder names are never reachable except for the fixed
set of safe special methods, unless ``allow_all_attrs`` is set; ``allow_public_attrs`` never
reaches frames, code objects, tracebacks or the names leading to them, and setting or
deleting never replaces a method or class-level attribute. It never calls anything on the
objects beyond attribute lookup.
"""

from __future__ import annotations

import builtins
import threading
import types
import weakref
from typing import Final

from ._config import Config
from ._service import EXPOSED_MARK

__all__ = ["Exposure", "SAFE_SPECIALS", "Descriptor"]

# Special methods the peer may always invoke (they are what len(), iter(), x[i], x == y,
# with-blocks and arithmetic need); attribute *values* behind them are never handed out.
SAFE_SPECIALS: Final = frozenset(
    """__abs__ __add__ __and__ __bool__ __call__ __complex__ __contains__ __delitem__
    __divmod__ __enter__ __eq__ __exit__ __float__ __floordiv__ __format__ __ge__
    __getitem__ __gt__ __hash__ __iadd__ __iand__ __ifloordiv__ __ilshift__ __imod__
    __imul__ __index__ __int__ __invert__ __ior__ __ipow__ __irshift__ __isub__ __iter__
    __itruediv__ __ixor__ __le__ __len__ __length_hint__ __lshift__ __lt__ __matmul__
    __mod__ __mul__ __ne__ __neg__ __next__ __or__ __pos__ __pow__ __radd__ __rand__
    __rdivmod__ __repr__ __reversed__ __rfloordiv__ __rlshift__ __rmod__ __rmul__ __ror__
    __round__ __rpow__ __rrshift__ __rshift__ __rsub__ __rtruediv__ __rxor__ __setitem__
    __str__ __sub__ __truediv__ __xor__""".split()
)
# Specials a proxy class defines only when the remote type has them (the rest of
# SAFE_SPECIALS that every object has, like __eq__ and __repr__, live on the base proxy).
OPTIONAL_SPECIALS: Final = SAFE_SPECIALS - {"__eq__", "__ne__", "__hash__", "__repr__", "__str__", "__format__"}

_METHOD_TYPES: Final = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    classmethod,
    staticmethod,
)

# Names ``allow_public_attrs`` never opens: the way from a generator, coroutine, frame or
# traceback to frames, code and a module's globals or builtins (gi_frame.f_builtins is eval),
# and the old spellings of function internals. Only ``allow_all_attrs`` reaches them.
INTERNAL_NAMES: Final = frozenset(
    """gi_frame gi_code gi_yieldfrom gi_running gi_suspended cr_frame cr_code cr_await
    cr_origin cr_running cr_suspended ag_frame ag_code ag_await ag_running f_back f_builtins
    f_code f_globals f_locals f_trace f_trace_lines f_trace_opcodes f_lasti f_lineno tb_frame
    tb_next tb_lasti tb_lineno func_globals func_code func_closure func_defaults func_dict
    im_func im_self im_class""".split()
)
# Objects whose public attributes are interpreter internals: nothing of them is public.
INTERNAL_TYPES: Final = (types.FrameType, types.CodeType, types.TracebackType)

# Bounds of a type descriptor (both sides apply them: describe() never exceeds them, and a
# peer's descriptor beyond them is a protocol error). Each method name costs a function in a
# proxy class; a class with more methods gets the first MAX_DESCRIBED_METHODS (sorted) as
# methods, and the rest still work through attribute lookup (one more round trip).
MAX_DESCRIBED_METHODS: Final = 1024
MAX_DESCRIBED_NAME: Final = 256  # characters of a method name
MAX_DESCRIBED_QUALNAME: Final = 1024  # characters of the module and of the qualified name

# (module, qualname, methods, specials, builtin class name or "")
Descriptor = tuple[str, str, tuple[str, ...], tuple[str, ...], str]


_MISSING: Final = object()


def _static_lookup(obj: object, name: str) -> object:
    """The attribute as stored in the class dicts (no descriptors run), or _MISSING."""
    mro = obj.__mro__ if isinstance(obj, type) else type(obj).__mro__
    for klass in mro:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return _MISSING


def _is_marked(attr: object) -> bool:
    target = getattr(attr, "__func__", None) or getattr(attr, "fget", None) or attr
    # Only a mark set on the object itself counts: instances and subclasses of an @exposed
    # class would otherwise inherit it through ordinary attribute lookup.
    own = getattr(target, "__dict__", None)
    return isinstance(own, (dict, types.MappingProxyType)) and own.get(EXPOSED_MARK) is True


def _builtin_class(cls: type) -> str:
    for klass in cls.__mro__:
        if klass is not object and getattr(builtins, klass.__name__, None) is klass:
            name: str = klass.__name__
            return name
    return ""


def _public(obj: object, name: str) -> bool:
    """Whether ``allow_public_attrs`` opens ``name`` of ``obj`` (or of instances of the class ``obj``)."""
    return not name.startswith("_") and name not in INTERNAL_NAMES and not isinstance(obj, INTERNAL_TYPES)


def _check_replaceable(obj: object, name: str, verb: str) -> None:
    """Refuse setting or deleting what is not the object's own data: any attribute of a class
    (its methods and class-level values are shared by every instance, and by every client of
    a shared service), an instance attribute that would shadow a class-level one (a method
    above all), and a module's functions and classes. A data descriptor's setter (a property
    with a setter, a slot) is the class's own way of storing data, so it stays allowed."""
    if isinstance(obj, type):
        raise AttributeError(f"{verb} attributes of a class ({obj.__qualname__}.{name}) is denied")
    if isinstance(obj, types.ModuleType):
        current = getattr(obj, name, None)
        if isinstance(current, (*_METHOD_TYPES, type, types.ModuleType)):
            raise AttributeError(f"{verb} the module attribute {obj.__name__}.{name} is denied")
        return
    static = _static_lookup(obj, name)
    if static is _MISSING:
        return
    if verb == "setting" and hasattr(type(static), "__set__") and not isinstance(static, _METHOD_TYPES):
        return  # a property with a setter, a slot: the class stores the value its own way
    if verb == "deleting" and hasattr(type(static), "__delete__") and not isinstance(static, _METHOD_TYPES):
        return
    raise AttributeError(f"{verb} {name!r} would replace a class-level attribute of {type(obj).__name__!r}, which is denied")


def _has_attr(obj: object, name: str) -> bool:
    return _static_lookup(obj, name) is not _MISSING or name in getattr(obj, "__dict__", ())


def _forwardable(name: str) -> bool:
    return not name.startswith("_rpc_") and not (name.startswith("__") and name.endswith("__") and name not in SAFE_SPECIALS)


def _describe_proxy_class(cls: type) -> Descriptor:
    """A proxy class lent on (rpc over rpc) is described as the owner described its type."""
    module, qualname = getattr(cls, "_rpc_type", ("", ""))
    methods = tuple(sorted(name for name, attr in vars(cls).items() if hasattr(attr, "_rpc_name")))
    specials = tuple(sorted(OPTIONAL_SPECIALS.intersection(vars(cls))))
    builtin = getattr(cls, "_rpc_builtin", None)
    return (module, qualname, methods, specials, builtin.__name__ if isinstance(builtin, type) else "")


def _resolve_forwarded(name: str) -> str:
    """The name to use on a proxy of a third party's object that this side lends on.

    Rpc over rpc: the object's owner applies its own exposure rules when the proxy forwards
    the operation, so this side only keeps the proxy's own machinery (``_rpc_*`` and dunder
    names other than the safe specials, which the proxy would answer locally) out of reach.
    """
    if not _forwardable(name):
        raise AttributeError(f"access to the private or special attribute {name!r} of a forwarded proxy is denied")
    return name


_MAX_PREFIXED: Final = 1024  # resolutions kept per exposure settings (then the cache starts over)
# exposure settings -> the resolutions made under them (Exposure._prefixed): what a name
# resolves to depends on the object's type and these settings only, so every connection
# with the same settings shares them (a new connection's first calls find them resolved)
_RESOLVED: Final[dict[tuple[object, ...], dict[tuple[type, str], tuple[str, object]]]] = {}
_MAX_SETTINGS: Final = 64

# The descriptors made so far: class -> exposure settings -> descriptor (held weakly: a
# class that goes away takes its descriptors along).
_DESCRIBED: Final[weakref.WeakKeyDictionary[type, dict[tuple[object, ...], Descriptor]]] = weakref.WeakKeyDictionary()
_DESCRIBED_LOCK: Final = threading.Lock()


_PROXY_TYPE: Final[list[type]] = []  # [Proxy], once imported (_proxy imports this module)


def _proxy_type() -> type:
    """``Proxy``, imported on the first connection (an import statement in ``Exposure``
    itself cost each connection ~4 us)."""
    from ._proxy import Proxy

    if not _PROXY_TYPE:
        _PROXY_TYPE.append(Proxy)
    return Proxy


class Exposure:
    """The exposure rules of one connection's config."""

    __slots__ = ("_config", "_prefix", "_proxy_type", "_safe", "_exposed", "_settings", "_prefixed")

    def __init__(self, config: Config) -> None:
        self._config = config
        self._prefix = config.exposed_prefix
        self._proxy_type = _PROXY_TYPE[0] if _PROXY_TYPE else _proxy_type()
        # RPyC's allow_safe_attrs / allow_exposed_attrs: False turns that class of names off
        self._safe = config.allow_safe_attrs or config.allow_all_attrs
        self._exposed = config.allow_exposed_attrs
        # what resolve and describe depend on
        self._settings = settings = (self._prefix, self._exposed, self._safe, config.allow_all_attrs, config.allow_public_attrs)
        # (type, name) -> (prefix + name, the class's attribute): what resolve found in the
        # class dicts for instances of that type (the commonest call, resolved once), used
        # while the class still has that very attribute (else resolved again); shared by the
        # connections with these settings (_RESOLVED; it holds those classes until it starts
        # over, where _DESCRIBED holds them weakly: a weak table would cost every call a look)
        prefixed = _RESOLVED.get(settings)
        if prefixed is None:
            if len(_RESOLVED) >= _MAX_SETTINGS:  # (exposed_prefix may be any string)
                _RESOLVED.clear()
            prefixed = _RESOLVED.setdefault(settings, {})
        self._prefixed = prefixed

    def resolve(self, obj: object, name: object) -> str:
        """The real attribute name behind the remote ``name``, or AttributeError."""
        if type(name) is not str:
            raise AttributeError("attribute names must be strings")
        known = self._prefixed.get((type(obj), name))
        if known is not None and getattr(type(obj), known[0], None) is known[1]:  # (the class still has it)
            return known[0]
        config = self._config
        if issubclass(type(obj), self._proxy_type):
            return _resolve_forwarded(name)
        if name in SAFE_SPECIALS and self._safe:
            return name
        if self._exposed:
            if name.startswith(self._prefix) and _has_attr(obj, name):
                return name  # RPyC's spelling: obj.exposed_foo is obj.foo
            prefixed = self._prefix + name
            if _static_lookup(obj, prefixed) is not _MISSING:
                if not isinstance(obj, type) and not name.startswith(self._prefix):  # (a class's own
                    # dicts decide for it, and so may an instance's for a prefixed name: not by type)
                    found = getattr(type(obj), prefixed, None)
                    if found is not None and found is getattr(type(obj), prefixed, None):  # (not a new object per read)
                        if len(self._prefixed) >= _MAX_PREFIXED:
                            self._prefixed.clear()
                        self._prefixed[type(obj), name] = (prefixed, found)
                return prefixed  # also under allow_all_attrs: the proxy's `name` method means exposed_<name>
            if prefixed in getattr(obj, "__dict__", ()):
                return prefixed
        if config.allow_all_attrs or (self._exposed and _is_marked(_static_lookup(obj, name))):
            return name
        if name.startswith("_"):
            raise AttributeError(f"access to the private or special attribute {name!r} is denied")
        if config.allow_public_attrs:
            if name in INTERNAL_NAMES or isinstance(obj, INTERNAL_TYPES):
                raise AttributeError(f"access to the interpreter-internal attribute {name!r} is denied (allow_public_attrs)")
            return name
        raise AttributeError(f"{type(obj).__name__!r} object has no exposed attribute {name!r}")

    def resolve_for(self, obj: object, name: object, allowed: bool, verb: str) -> str:
        """Like :meth:`resolve`, for setting or deleting, which the config must allow."""
        if type(name) is str and issubclass(type(obj), self._proxy_type):
            return _resolve_forwarded(name)  # the owner's config decides (see _resolve_forwarded)
        if not allowed and not self._config.allow_all_attrs:
            raise AttributeError(f"{verb} attributes of remote objects is not allowed by this side's config")
        if type(name) is str and name in SAFE_SPECIALS and not self._config.allow_all_attrs:
            # the safe specials may be invoked, never replaced (a planted __eq__ would run for every peer)
            raise AttributeError(f"{verb} the special attribute {name!r} is denied")
        real = self.resolve(obj, name)
        if not self._config.allow_all_attrs:
            _check_replaceable(obj, real, verb)
        return real

    def visible_names(self, obj: object) -> tuple[str, ...]:
        """What ``dir(proxy)`` shows the peer."""
        if issubclass(type(obj), self._proxy_type):
            return tuple(sorted(name for name in dir(obj) if type(name) is str and _forwardable(name)))
        names = set()
        config = self._config
        for name in dir(obj):
            if config.allow_all_attrs:
                names.add(name)
            if self._exposed and name.startswith(self._prefix):
                names.add(name[len(self._prefix) :])
            elif (self._exposed and _is_marked(_static_lookup(obj, name))) or (config.allow_public_attrs and _public(obj, name)):
                names.add(name)
            elif name in SAFE_SPECIALS and self._safe:
                names.add(name)
        return tuple(sorted(names))

    def describe(self, cls: type) -> Descriptor:
        """The descriptor of ``cls`` sent with the first reference to one of its instances.

        Computed once per class and exposure settings, then shared by every connection with
        those settings (a class changed after that keeps its first description: methods
        added later are reached by attribute lookup, one more round trip).
        """
        if issubclass(cls, self._proxy_type):
            return _describe_proxy_class(cls)
        key = self._settings
        try:
            return _DESCRIBED[cls][key]
        except KeyError:
            pass
        except TypeError:  # (not weakly referable: described every time)
            return self._describe(cls)
        descriptor = self._describe(cls)
        with _DESCRIBED_LOCK:
            _DESCRIBED.setdefault(cls, {})[key] = descriptor
        return descriptor

    def _describe(self, cls: type) -> Descriptor:
        config = self._config
        # the class attributes as _static_lookup would find them, gathered once
        merged: dict[str, object] = {}
        for klass in reversed(cls.__mro__):
            merged.update(klass.__dict__)
        methods = []
        for attr_name, attr in merged.items():
            if attr_name.startswith("__"):
                continue
            if self._exposed and attr_name.startswith(self._prefix):
                public = attr_name[len(self._prefix) :]
            elif (self._exposed and _is_marked(attr)) or config.allow_all_attrs or (config.allow_public_attrs and _public(cls, attr_name)):
                public = attr_name
            else:
                continue
            if (
                isinstance(attr, _METHOD_TYPES)
                and public.isidentifier()
                and len(public) <= MAX_DESCRIBED_NAME
                and not public.startswith(("_rpc_", "__"))
            ):
                methods.append(public)
        specials = tuple(sorted(name for name in OPTIONAL_SPECIALS.intersection(merged) if merged[name] is not None))
        if not self._safe:
            # As in RPyC, calling is not a safe attribute: a CALL request runs whatever
            # allow_safe_attrs says, so a callable's proxy stays callable (returned functions,
            # obj.exposed_method); the other safe specials are off.
            specials = tuple(name for name in specials if name == "__call__")
        if isinstance(cls, type) and issubclass(cls, type):
            specials = tuple(sorted({*specials, "__call__"}))
        module, qualname = str(getattr(cls, "__module__", "?")), cls.__qualname__  # (type() in a namespace without __name__: none)
        return (
            module[:MAX_DESCRIBED_QUALNAME],
            qualname[:MAX_DESCRIBED_QUALNAME],
            tuple(sorted(set(methods))[:MAX_DESCRIBED_METHODS]),
            specials,
            _builtin_class(cls),
        )
