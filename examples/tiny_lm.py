"""A tiny autoregressive "language model" for examples/smc_inference_scaling.py:
arithmetic expressions that must evaluate to a target, and a small flax nnx
network, trained in seconds, that writes them.

An answer is ``NUM_STEPS`` chunks, each one token: an operator and a digit,
``+d``, ``-d`` or ``*d`` with d in 1..9 (27 tokens). The first chunk is
always ``+d`` and is written as the bare digit, so the tokens for
``3*4-2+7`` are ``+3 *4 -2 +7``. Multiplication binds tighter than addition
and subtraction, as usual: that is what makes a partial answer's value an
imperfect guide to where the answer will end (``...+5`` followed by ``*9``).

The model is an MLP over a fixed context window (the target and every
earlier chunk, padded), trained by maximum likelihood on random valid
expressions conditioned on their value. It is deliberately small and
briefly trained: sampling from it hits the target only some of the time,
which is what leaves room for inference-time scaling.
"""

import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

__all__ = [
    "NUM_STEPS", "NUM_TOKENS", "MAX_TARGET", "PAD", "TinyLM", "advance", "initial_value_state", "value_of",
    "evaluate", "render", "random_expressions", "train", "sample_answers",
]

NUM_STEPS = 8  # chunks per answer: the "reasoning steps"
NUM_DIGITS = 9
NUM_TOKENS = 3 * NUM_DIGITS  # token k: operator k // 9 ("+", "-", "*"), digit k % 9 + 1
PAD = NUM_TOKENS  # the context-window filler for steps not yet written
MAX_TARGET = 399  # targets (prompts) are the integers 0..MAX_TARGET
MULTIPLY_PROBABILITY = 0.35  # of an operator in the training expressions ("+" and "-" share the rest)
OPERATORS = "+-*"


# ----- the task: values of partial answers ------------------------------------------------------


def initial_value_state():
    """``(total, term)`` of the empty answer: the sum of the finished terms and the last term."""
    zero = jnp.zeros((), jnp.int32)
    return zero, zero


def advance(value_state, token):
    """The ``(total, term)`` after one more chunk: ``+d`` and ``-d`` finish the
    last term and start a new one, ``*d`` multiplies the last term."""
    total, term = value_state
    operator, digit = token // NUM_DIGITS, token % NUM_DIGITS + 1
    total = jnp.where(operator < 2, total + term, total)
    term = jnp.where(operator == 0, digit, jnp.where(operator == 1, -digit, term * digit))
    return total, term


def value_of(value_state):
    """The value of the (partial) answer, as if it ended here."""
    total, term = value_state
    return total + term


def evaluate(tokens):
    """The value of an answer, tokens ``(..., NUM_STEPS)``.

    >>> int(evaluate(jnp.array([2, 21, 10, 6, 0, 0, 9, 26])))  # 3*4-2+7+1+1-1*9
    10
    """
    def body(value_state, token):
        return advance(value_state, token), None

    flat = tokens.reshape(-1, tokens.shape[-1])
    final, _ = jax.vmap(lambda row: jax.lax.scan(body, initial_value_state(), row))(flat)
    return value_of(final).reshape(tokens.shape[:-1])


def render(tokens):
    """An answer as text: ``[2, 21, 10]`` -> ``"3*4-2"``."""
    text = "".join(f"{OPERATORS[int(t) // NUM_DIGITS]}{int(t) % NUM_DIGITS + 1}" for t in tokens)
    return text[1:] if text.startswith("+") else text


def random_expressions(key, num):
    """``(tokens (num, NUM_STEPS), values (num,))``: chunks drawn independently,
    digits uniform, the first operator "+"."""
    operator_key, digit_key = jax.random.split(key)
    plus_or_minus = (1.0 - MULTIPLY_PROBABILITY) / 2
    log_probabilities = jnp.log(jnp.array([plus_or_minus, plus_or_minus, MULTIPLY_PROBABILITY]))
    operators = jax.random.categorical(operator_key, log_probabilities, shape=(num, NUM_STEPS)).at[:, 0].set(0)
    tokens = operators * NUM_DIGITS + jax.random.randint(digit_key, (num, NUM_STEPS), 0, NUM_DIGITS)
    return tokens, evaluate(tokens)


# ----- the model --------------------------------------------------------------------------


class TinyLM(nnx.Module):
    """Next-chunk logits from the target, the chunks so far and the position."""

    def __init__(self, hidden_size, *, rngs, embedding_size=32):
        self.target_embedding = nnx.Embed(MAX_TARGET + 1, embedding_size, rngs=rngs)
        self.token_embedding = nnx.Embed(NUM_TOKENS + 1, embedding_size, rngs=rngs)
        context_size = embedding_size * (1 + NUM_STEPS) + NUM_STEPS
        self.hidden = nnx.Linear(context_size, hidden_size, rngs=rngs)
        self.hidden2 = nnx.Linear(hidden_size, hidden_size, rngs=rngs)
        self.out = nnx.Linear(hidden_size, NUM_TOKENS, rngs=rngs)

    def __call__(self, target, context, position):
        """Logits ``(NUM_TOKENS,)`` of chunk ``position`` given ``context``
        ``(NUM_STEPS,)`` (the earlier chunks, ``PAD`` from ``position`` on).
        The first chunk's operator is "+" (the grammar), so other first
        chunks get log probability -inf."""
        features = jnp.concatenate([
            self.target_embedding(target),
            self.token_embedding(context).reshape(-1),
            jax.nn.one_hot(position, NUM_STEPS),
        ])
        hidden = nnx.gelu(self.hidden2(nnx.gelu(self.hidden(features))))
        logits = self.out(hidden)
        not_plus = jnp.arange(NUM_TOKENS) >= NUM_DIGITS
        return jnp.where((position == 0) & not_plus, -jnp.inf, logits)


def _contexts(tokens):
    """Row t: the context window for step t (the first t chunks, then PAD)."""
    steps = jnp.arange(NUM_STEPS)
    return jnp.where(steps[None, :] < steps[:, None], tokens[None, :], PAD)


def train(key, num_steps, *, hidden_size=128, batch_size=256, learning_rate=3e-3, compiler_options=None):
    """``(model, losses, seconds)``: a ``TinyLM`` trained by Adam for
    ``num_steps`` on fresh random expressions each step, keeping those whose
    value is a target (0..MAX_TARGET), each conditioned on its value.
    Initialisation and the training loop (a ``lax.scan``) are one compiled
    program (``compiler_options``: XLA's, for that compilation). ``losses``:
    the negative log likelihood per expression at each step."""
    graph = nnx.graphdef(nnx.eval_shape(lambda: TinyLM(hidden_size, rngs=nnx.Rngs(0))))
    optimizer = optax.adam(learning_rate)

    def loss_fn(params, k):
        tokens, values = random_expressions(k, batch_size)
        keep = (values >= 0) & (values <= MAX_TARGET)
        model = nnx.merge(graph, params)

        def negative_log_likelihood(tokens, target):
            logits = jax.vmap(lambda context, t: model(target, context, t))(_contexts(tokens), jnp.arange(NUM_STEPS))
            return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, None], axis=1))

        losses = jax.vmap(negative_log_likelihood)(tokens, jnp.clip(values, 0, MAX_TARGET))
        return jnp.sum(jnp.where(keep, losses, 0.0)) / jnp.maximum(jnp.sum(keep), 1)

    def fit(k):
        init_key, data_key = jax.random.split(k)
        params = nnx.state(TinyLM(hidden_size, rngs=nnx.Rngs(init_key)))

        def step(carry, step_key):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, step_key)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(data_key, num_steps))
        return params, losses

    start = time.perf_counter()
    params, losses = jax.jit(fit).lower(key).compile(compiler_options)(key)
    losses.block_until_ready()
    return nnx.merge(graph, params), losses, time.perf_counter() - start


def sample_answers(key, model, target, num):
    """``num`` independent answers ``(num, NUM_STEPS)`` for ``target``, straight from the model."""
    def one(k):
        def body(context, inputs):
            step_key, position = inputs
            token = jax.random.categorical(step_key, model(target, context, position))
            return context.at[position].set(token), None

        context, _ = jax.lax.scan(body, jnp.full((NUM_STEPS,), PAD, jnp.int32),
                                  (jax.random.split(k, NUM_STEPS), jnp.arange(NUM_STEPS)))  # fmt: skip
        return context

    return jax.vmap(one)(jax.random.split(key, num))
