# chanload's telemetry collector, deployed onto the Lightning node with
# Code.eval_string/1 and removed again when the run ends.
#
# It attaches one handler to the [:lightning, :channel_proxy, *, :stop]
# events. Handlers run in the connection processes and bump counters in a
# public ETS table (write_concurrency), so nothing serialises the proxy and
# memory stays bounded: durations are counted per bucket of 3 significant
# digits (exact below 1 ms), never kept one by one.

defmodule Chanload.TelemetryCollector do
  @moduledoc false
  @table :chanload_telemetry
  @handler "chanload-telemetry-collector"

  # Start (or restart) the collector; returns :ok.
  def start(events) do
    stop()
    parent = self()

    owner =
      spawn(fn ->
        :ets.new(@table, [:set, :named_table, :public, write_concurrency: true])
        send(parent, {:chanload_collector_ready, self()})

        receive do
          :stop -> :ok
        end
      end)

    receive do
      {:chanload_collector_ready, ^owner} -> :ok
    after
      5_000 -> exit(:collector_table_timeout)
    end

    Process.register(owner, :chanload_telemetry_owner)
    stop_events = Enum.map(events, &(&1 ++ [:stop]))
    :telemetry.attach_many(@handler, stop_events, &__MODULE__.handle_event/4, nil)
  end

  def handle_event(event, %{duration: duration}, _metadata, _config) do
    us = System.convert_time_unit(duration, :native, :microsecond)
    key = Enum.at(event, -2)
    bucket = bucket(us)

    try do
      :ets.update_counter(@table, {key, bucket}, {2, 1}, {{key, bucket}, 0})
      :ets.update_counter(@table, {key, :count}, {2, 1}, {{key, :count}, 0})
      :ets.update_counter(@table, {key, :sum}, {2, us}, {{key, :sum}, 0})
    rescue
      ArgumentError -> :ok
    end

    :ok
  end

  def handle_event(_event, _measurements, _metadata, _config), do: :ok

  # Below 1 ms, exact; above, 3 significant digits (rounded down).
  def bucket(us) when us < 1_000, do: max(us, 0)

  def bucket(us) do
    scale = Integer.pow(10, length(Integer.digits(us)) - 3)
    div(us, scale) * scale
  end

  # %{event => %{count: n, sum: us, buckets: [{lower_bound_us, n}, ...]}}
  def summary do
    if :ets.info(@table) == :undefined do
      %{}
    else
      Enum.reduce(:ets.tab2list(@table), %{}, fn
        {{key, :count}, n}, acc ->
          Map.update(acc, key, %{count: n, sum: 0, buckets: []}, &%{&1 | count: n})

        {{key, :sum}, n}, acc ->
          Map.update(acc, key, %{count: 0, sum: n, buckets: []}, &%{&1 | sum: n})

        {{key, bucket}, n}, acc ->
          Map.update(
            acc,
            key,
            %{count: 0, sum: 0, buckets: [{bucket, n}]},
            &%{&1 | buckets: [{bucket, n} | &1.buckets]}
          )
      end)
    end
  end

  def reset do
    if :ets.info(@table) != :undefined, do: :ets.delete_all_objects(@table)
    :ok
  end

  # Detach the handler, drop the table, end the owner. Safe to call twice.
  def stop do
    :telemetry.detach(@handler)

    case Process.whereis(:chanload_telemetry_owner) do
      nil -> :ok
      pid -> send(pid, :stop)
    end

    wait_gone(50)
  end

  defp wait_gone(0), do: :ok

  defp wait_gone(n) do
    if :ets.info(@table) == :undefined and Process.whereis(:chanload_telemetry_owner) == nil do
      :ok
    else
      Process.sleep(10)
      wait_gone(n - 1)
    end
  end

  # What is left of us on the node (for tests and for a final check).
  def leftovers do
    handlers =
      :telemetry.list_handlers([:lightning, :channel_proxy])
      |> Enum.filter(&(&1.id == @handler))

    %{
      table: :ets.info(@table) != :undefined,
      owner: Process.whereis(:chanload_telemetry_owner) != nil,
      handlers: length(handlers)
    }
  end
end
