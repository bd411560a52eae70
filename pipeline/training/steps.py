"""Distributed train and evaluation steps of one stage model, seen from a single replica."""

import keras
import tensorflow as tf

from pipeline.training import fusion as fusion_lib
from pipeline.training import metrics


class Steps:
    """`train(iterator)` runs one step on the next global batch; `evaluate(dataset)` one pass in one
    graph."""

    def __init__(
        self,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        optimizer,
        global_batch: int,
        fusion: str = "concat",
        joint: bool = True,
    ):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.global_batch = global_batch

        def train_replica(bottlenecks, labels):
            with tf.GradientTape() as tape:
                outputs = model(bottlenecks, training=True)
                per_example = fusion_lib.per_example_loss(fusion, outputs, labels, joint)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
            logits = outputs["logits"]
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss, metrics.correct_in_top_k(logits, labels, 1)

        def evaluate_replica(bottlenecks, labels):
            logits = model(bottlenecks, training=False)["logits"]
            # The prediction's cross-entropy, whatever the fusion trains on: one number to compare
            # arms by.
            per_example = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            return (
                tf.reduce_sum(per_example),
                metrics.correct_in_top_k(logits, labels, 1),
                metrics.correct_in_top_k(logits, labels, 5),
                tf.cast(tf.shape(labels)[0], tf.float32),
            )

        @tf.function
        def train(iterator):
            loss, correct = strategy.run(train_replica, args=next(iterator))
            return strategy.reduce("SUM", loss, axis=None), strategy.reduce(
                "SUM", correct, axis=None
            )

        @tf.function
        def evaluate(dataset):
            # The loop runs inside one graph: no retracing for the smaller last batch of every pass.
            totals = tf.zeros([4])
            for batch in dataset:
                sums = strategy.run(evaluate_replica, args=batch)
                totals += tf.stack([strategy.reduce("SUM", value, axis=None) for value in sums])
            return totals

        self.train = train
        self._evaluate = evaluate

    def evaluate(self, dataset) -> dict:
        loss, top1, top5, count = (float(value) for value in self._evaluate(dataset))
        return {"loss": loss / count, "top1": top1 / count, "top5": top5 / count}
