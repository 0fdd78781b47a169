# Shared by both profiles of the Lightning stand-in (see lightning.exs).
#
# What lives here: a :telemetry module, the few Ecto modules whose names
# callers see (Ecto.Changeset, Ecto.MultipleResultsError, ...), an ETS row
# store, Lightning.Repo over it, and the Project / ProjectUser schemas. The
# profile files (seed.exs, today.exs) add the schemas and contexts that differ.
#
# Modules under Lightning.StandIn.* are stand-in machinery with no
# counterpart in Lightning; every other module is named like the real one so
# that RPC calls look the same as against a real node.

defmodule :telemetry do
  @moduledoc false
  # The parts of the telemetry library Lightning and chanload use:
  # attach/4, attach_many/4, detach/1, list_handlers/1, execute/3, span/3.
  @table :telemetry_standin_handlers

  def init do
    parent = self()

    spawn(fn ->
      :ets.new(@table, [:set, :named_table, :public, read_concurrency: true])
      send(parent, :telemetry_ready)
      Process.sleep(:infinity)
    end)

    receive do
      :telemetry_ready -> :ok
    end
  end

  def attach(id, event, fun, config), do: attach_many(id, [event], fun, config)

  def attach_many(id, events, fun, config) when is_function(fun, 4) do
    if :ets.insert_new(@table, {id, events, fun, config}), do: :ok, else: {:error, :already_exists}
  end

  def detach(id) do
    case :ets.lookup(@table, id) do
      [] ->
        {:error, :not_found}

      _ ->
        :ets.delete(@table, id)
        :ok
    end
  end

  def list_handlers(prefix) do
    for {id, events, fun, config} <- :ets.tab2list(@table),
        event <- events,
        List.starts_with?(event, prefix) do
      %{id: id, event_name: event, function: fun, config: config}
    end
  end

  def execute(event, measurements, metadata) do
    for {id, events, fun, config} <- :ets.tab2list(@table), event in events do
      try do
        fun.(event, measurements, metadata, config)
      rescue
        _ -> detach(id)
      end
    end

    :ok
  end

  def span(prefix, start_metadata, fun) do
    start = System.monotonic_time()
    execute(prefix ++ [:start], %{system_time: System.system_time(), monotonic_time: start}, start_metadata)

    try do
      {result, stop_metadata} = fun.()
      stop = System.monotonic_time()
      execute(prefix ++ [:stop], %{duration: stop - start, monotonic_time: stop}, stop_metadata)
      result
    rescue
      e ->
        stop = System.monotonic_time()
        execute(prefix ++ [:exception], %{duration: stop - start}, Map.put(start_metadata, :reason, e))
        reraise e, __STACKTRACE__
    end
  end
end

# --- Ecto names callers can see ------------------------------------------------

defmodule Ecto.Changeset do
  @moduledoc false
  # The real struct's keys; only action, changes, data, errors, params,
  # types and valid? are filled in. Errors are a keyword list
  # [field: {message, opts}], newest first, as Ecto keeps them.
  defstruct action: nil,
            changes: %{},
            constraints: [],
            data: nil,
            empty_values: [""],
            errors: [],
            filters: %{},
            params: nil,
            prepare: [],
            repo: nil,
            repo_opts: [],
            required: [],
            types: %{},
            valid?: false,
            validations: []
end

defmodule Ecto.MultipleResultsError do
  # Raised by Repo.get_by/2 (and Repo.one/1) when more than one row matches.
  defexception [:message]
end

defmodule Ecto.StaleEntryError do
  # Raised by Repo.delete/1 when the row is already gone.
  defexception [:message]
end

defmodule Ecto.QueryError do
  # Raised when a query names a field the schema does not have.
  defexception [:message]
end

defmodule Ecto.CastError do
  # Raised by cast/3 when params mix atom and string keys.
  defexception [:message]
end

# --- stand-in machinery ------------------------------------------------------------

defmodule Lightning.StandIn do
  @moduledoc false
  # Helpers shared by the profiles: ids, time, Ecto.UUID.cast.

  def uuid do
    <<a::32, b::16, c::16, d::16, e::48>> = :crypto.strong_rand_bytes(16)
    c = Bitwise.bor(Bitwise.band(c, 0x0FFF), 0x4000)
    d = Bitwise.bor(Bitwise.band(d, 0x3FFF), 0x8000)

    :io_lib.format("~8.16.0b-~4.16.0b-~4.16.0b-~4.16.0b-~12.16.0b", [a, b, c, d, e])
    |> IO.iodata_to_binary()
  end

  def now, do: DateTime.utc_now()

  # Ecto.UUID.cast/1: a 36-character hyphenated hex string (any case, result
  # lowercased), or a raw 16-byte binary (encoded); anything else is :error.
  def cast_uuid(<<_::binary-size(36)>> = s) do
    case String.split(s, "-") do
      [a, b, c, d, e]
      when byte_size(a) == 8 and byte_size(b) == 4 and byte_size(c) == 4 and byte_size(d) == 4 and
             byte_size(e) == 12 ->
        if String.match?(a <> b <> c <> d <> e, ~r/\A[0-9a-fA-F]{32}\z/),
          do: {:ok, String.downcase(s)},
          else: :error

      _ ->
        :error
    end
  end

  def cast_uuid(<<raw::binary-size(16)>>) do
    <<a::binary-size(4), b::binary-size(2), c::binary-size(2), d::binary-size(2), e::binary-size(6)>> = raw
    {:ok, Enum.map_join([a, b, c, d, e], "-", &Base.encode16(&1, case: :lower))}
  end

  def cast_uuid(_), do: :error
end

defmodule Lightning.StandIn.Schema do
  @moduledoc false
  # What an Ecto schema module answers, for the stand-in's schemas:
  # __schema__(:source | :fields | :primary_key | :associations), plus the
  # stand-in's own metadata (associations, cascades, foreign keys, unique
  # keys, and how a row is stored in ETS).
  #
  #   fields:   the columns, in order (the struct's keys, with the assocs)
  #   defaults: [field: default] where not nil (Ecto's `field ..., default:`)
  #   assocs:   [name: {:many, Schema, foreign_key, where_keyword}
  #                  | {:one, Schema, foreign_key_on_this_row}
  #                  | {:through, [assoc, assoc_of_that]}]
  #             (in the struct: [] for :many and :through, nil for :one;
  #             the stand-in preloads instead of Ecto's NotLoaded)
  #   cascade:  [{ChildSchema, foreign_key}]  deleted with the row (DB FKs)
  #   fks:      [{field, ParentSchema, error_field, constraint_name}]
  defmacro __using__(opts) do
    quote do
      @standin_opts unquote(opts)
      defstruct Enum.map(Keyword.fetch!(@standin_opts, :fields), fn field ->
                  {field, Keyword.get(Keyword.get(@standin_opts, :defaults, []), field)}
                end) ++
                  Enum.map(Keyword.get(@standin_opts, :assocs, []), fn {name, spec} ->
                    {name, if(elem(spec, 0) == :one, do: nil, else: [])}
                  end)

      def __schema__(:source), do: Keyword.fetch!(@standin_opts, :source)
      def __schema__(:fields), do: Keyword.fetch!(@standin_opts, :fields)
      def __schema__(:primary_key), do: [:id]
      def __schema__(:associations), do: Keyword.keys(Keyword.get(@standin_opts, :assocs, []))
      def __standin_assoc__(name), do: Keyword.get(Keyword.get(@standin_opts, :assocs, []), name)
      def __standin_cascade__, do: Keyword.get(@standin_opts, :cascade, [])
      def __standin_fks__, do: Keyword.get(@standin_opts, :fks, [])
      # [{index_key, field, message, constraint_name}] this row must hold alone.
      def __standin_unique__(_row), do: []
      def __standin_dump__(row), do: {row.id, row}
      def __standin_load__({_id, row}), do: row
      defoverridable __standin_unique__: 1, __standin_dump__: 1, __standin_load__: 1
    end
  end
end

defmodule Lightning.StandIn.Changeset do
  @moduledoc false
  # The subset of Ecto.Changeset the stand-in's contexts use. Like Ecto, each
  # validation prepends its errors, so the last one added comes first.
  alias Ecto.Changeset

  # cast/3: only the permitted fields, atom or string keys (not mixed), "" and
  # blank strings become nil, values cast to the field's type.
  def cast(data, attrs, types) when is_map(attrs) do
    check_keys!(attrs)

    {changes, errors} =
      Enum.reduce(types, {%{}, []}, fn {field, type}, {changes, errors} ->
        case fetch_param(attrs, field) do
          :error ->
            {changes, errors}

          {:ok, value} ->
            case cast_value(type, value) do
              {:ok, value} ->
                if Map.get(data, field) == value,
                  do: {changes, errors},
                  else: {Map.put(changes, field, value), errors}

              :error ->
                {changes, [{field, {"is invalid", [type: type_name(type), validation: :cast]}} | errors]}
            end
        end
      end)

    %Changeset{
      data: data,
      params: attrs,
      changes: changes,
      errors: errors,
      valid?: errors == [],
      types: Map.new(types, fn {f, t} -> {f, type_name(t)} end)
    }
  end

  def fetch_param(attrs, field) do
    case Map.fetch(attrs, field) do
      {:ok, v} -> {:ok, v}
      :error -> Map.fetch(attrs, Atom.to_string(field))
    end
  end

  defp check_keys!(attrs) do
    kinds = attrs |> Map.keys() |> Enum.map(&is_atom/1) |> Enum.uniq()

    if length(kinds) > 1 do
      raise Ecto.CastError,
        message:
          "expected params to be a map with atoms or string keys, got a map with mixed keys: #{inspect(attrs)}"
    end
  end

  defp cast_value(_type, nil), do: {:ok, nil}

  defp cast_value(:string, v) when is_binary(v) do
    if String.trim(v) == "", do: {:ok, nil}, else: {:ok, v}
  end

  defp cast_value(:boolean, v) when is_boolean(v), do: {:ok, v}
  defp cast_value(:boolean, v) when v in ["true", "1"], do: {:ok, true}
  defp cast_value(:boolean, v) when v in ["false", "0"], do: {:ok, false}
  defp cast_value(:integer, v) when is_integer(v), do: {:ok, v}
  defp cast_value(:utc_datetime_usec, %DateTime{} = v), do: {:ok, v}
  defp cast_value(:map, v) when is_map(v), do: {:ok, v}
  defp cast_value(:binary_id, ""), do: {:ok, nil}
  defp cast_value(:binary_id, v), do: Lightning.StandIn.cast_uuid(v)

  defp cast_value({:enum, values}, v) when is_atom(v), do: if(v in values, do: {:ok, v}, else: :error)

  defp cast_value({:enum, values}, v) when is_binary(v) do
    case Enum.find(values, &(Atom.to_string(&1) == v)) do
      nil -> :error
      atom -> {:ok, atom}
    end
  end

  defp cast_value(_type, _v), do: :error

  defp type_name({:enum, _}), do: Ecto.Enum
  defp type_name(t), do: t

  def get_field(%Changeset{changes: changes, data: data}, field) do
    case Map.fetch(changes, field) do
      {:ok, v} -> v
      :error -> Map.get(data, field)
    end
  end

  def get_change(%Changeset{changes: changes}, field, default \\ nil), do: Map.get(changes, field, default)

  def put_change(%Changeset{} = cs, field, value), do: %{cs | changes: Map.put(cs.changes, field, value)}

  def update_change(%Changeset{} = cs, field, fun) do
    case Map.fetch(cs.changes, field) do
      {:ok, v} when v != nil -> put_change(cs, field, fun.(v))
      _ -> cs
    end
  end

  def add_error(%Changeset{} = cs, field, message, keys \\ []) do
    %{cs | errors: [{field, {message, keys}} | cs.errors], valid?: false}
  end

  def validate_required(%Changeset{} = cs, fields, opts \\ []) do
    message = Keyword.get(opts, :message, "can't be blank")

    missing =
      for field <- List.wrap(fields),
          get_field(cs, field) in [nil, ""],
          not Keyword.has_key?(cs.errors, field),
          do: {field, {message, [validation: :required]}}

    %{cs | errors: missing ++ cs.errors, valid?: cs.valid? and missing == [], required: List.wrap(fields) ++ cs.required}
  end

  def validate_format(%Changeset{} = cs, field, regex, opts \\ []) do
    validate_change(cs, field, fn _, value ->
      if is_binary(value) and not Regex.match?(regex, value),
        do: [{field, {Keyword.get(opts, :message, "has invalid format"), [validation: :format]}}],
        else: []
    end)
  end

  def validate_length(%Changeset{} = cs, field, opts) do
    validate_change(cs, field, fn _, value ->
      len = if is_binary(value), do: String.length(value), else: length(value)

      cond do
        (min = opts[:min]) && len < min ->
          [{field, {"should be at least %{count} character(s)", [count: min, validation: :length, kind: :min, type: :string]}}]

        (max = opts[:max]) && len > max ->
          [{field, {"should be at most %{count} character(s)", [count: max, validation: :length, kind: :max, type: :string]}}]

        true ->
          []
      end
    end)
  end

  # validate_change/3: runs only when the field has a non-nil change; the
  # function returns [{field, message}] or [{field, {message, keys}}].
  def validate_change(%Changeset{} = cs, field, fun) do
    case Map.fetch(cs.changes, field) do
      {:ok, value} when value != nil ->
        Enum.reduce(fun.(field, value), cs, fn
          {f, {msg, keys}}, acc -> add_error(acc, f, msg, keys)
          {f, msg}, acc -> add_error(acc, f, msg, [])
        end)

      _ ->
        cs
    end
  end

  def apply_changes(%Changeset{data: data, changes: changes}), do: Map.merge(data, changes)
end

defmodule Lightning.Store do
  @moduledoc false
  # The stand-in's "database": one public ETS table per schema (named after
  # the schema module; read and write concurrency, so the proxy's
  # connection processes write their ChannelRequest / ChannelEvent rows
  # without going through a single process), plus one table of unique keys
  # claimed with insert_new (email, channel name per project, request_id...).
  @index :lightning_standin_unique_keys

  def start(schemas) do
    parent = self()

    spawn(fn ->
      for schema <- schemas do
        :ets.new(schema, [:set, :named_table, :public, read_concurrency: true, write_concurrency: true])
      end

      :ets.new(@index, [:set, :named_table, :public, write_concurrency: true])
      send(parent, :store_ready)
      Process.sleep(:infinity)
    end)

    receive do
      :store_ready -> :ok
    end
  end

  def all(schema), do: :ets.foldl(fn obj, acc -> [schema.__standin_load__(obj) | acc] end, [], schema)

  def get(schema, id) when is_binary(id) do
    case :ets.lookup(schema, id) do
      [obj] -> schema.__standin_load__(obj)
      [] -> nil
    end
  end

  def get(_schema, _id), do: nil

  def filter(schema, fun) do
    :ets.foldl(
      fn obj, acc ->
        row = schema.__standin_load__(obj)
        if fun.(row), do: [row | acc], else: acc
      end,
      [],
      schema
    )
  end

  # Associations are not stored with the row (they are loaded by preload).
  def put(%schema{} = row) do
    defaults = schema.__struct__()
    stored = Enum.reduce(schema.__schema__(:associations), row, &Map.put(&2, &1, Map.fetch!(defaults, &1)))
    :ets.insert(schema, schema.__standin_dump__(stored))
    stored
  end

  def delete(schema, id), do: :ets.delete(schema, id)

  # Unique keys: claim/2 is atomic (insert_new) and remembers the id of the
  # row holding the key (lookup_key/1); release/1 frees one.
  def claim(key, id \\ true), do: :ets.insert_new(@index, {key, id})
  def release(key), do: :ets.delete(@index, key)

  def lookup_key(key) do
    case :ets.lookup(@index, key) do
      [{_, id}] -> id
      [] -> nil
    end
  end

  def table?(schema), do: :ets.whereis(schema) != :undefined

  def uuid, do: Lightning.StandIn.uuid()
end

defmodule Lightning.Repo do
  @moduledoc false
  # Lightning.Repo (an Ecto.Repo) over Lightning.Store: the calls Lightning's
  # contexts and chanload make, with Ecto's answers and errors.
  alias Lightning.Store
  alias Lightning.StandIn.Changeset, as: CS

  def all(schema) when is_atom(schema), do: Store.all(schema)

  def get(schema, id) when is_atom(schema), do: Store.get(schema, id)

  def get!(schema, id) do
    get(schema, id) || raise(ArgumentError, "expected at least one result but got none")
  end

  # Ecto's get_by/2: clauses compared with ==, nil is refused, a field the
  # schema lacks is an Ecto.QueryError, more than one match an
  # Ecto.MultipleResultsError.
  def get_by(schema, clauses) when is_atom(schema) do
    clauses = Enum.to_list(clauses)
    fields = schema.__schema__(:fields)

    for {field, value} <- clauses do
      unless field in fields do
        raise Ecto.QueryError,
          message:
            "field `#{field}` in `where` does not exist in schema #{inspect(schema)} in query:\n\n" <>
              query_text(schema, clauses)
      end

      if value == nil do
        raise ArgumentError,
              "nil given for `#{field}`. Comparison with nil is forbidden as it is unsafe. " <>
                "Instead write a query with is_nil/1, for example: is_nil(s.#{field})"
      end
    end

    rows =
      case Keyword.fetch(clauses, :id) do
        {:ok, id} -> List.wrap(Store.get(schema, id)) |> Enum.filter(&matches?(&1, clauses))
        :error -> Store.filter(schema, &matches?(&1, clauses))
      end

    case rows do
      [] ->
        nil

      [row] ->
        row

      many ->
        raise Ecto.MultipleResultsError,
          message: "expected at most one result but got #{length(many)} in query:\n\n" <> query_text(schema, clauses)
    end
  end

  defp matches?(row, clauses), do: Enum.all?(clauses, fn {k, v} -> Map.get(row, k) == v end)

  defp query_text(schema, clauses) do
    var = schema |> Module.split() |> List.last() |> String.first() |> String.downcase() |> Kernel.<>("0")
    wheres = Enum.map_join(clauses, " and ", fn {k, v} -> "#{var}.#{k} == ^#{inspect(v)}" end)
    "from #{var} in #{inspect(schema)},\n  where: #{wheres}\n"
  end

  # insert/1 of a changeset: foreign keys must point at existing rows, unique
  # keys must be free (checked in that order, one error, as Postgres reports
  # the first violated constraint); id and timestamps are filled in.
  def insert(%Ecto.Changeset{valid?: false} = cs), do: {:error, %{cs | action: :insert}}

  def insert(%Ecto.Changeset{data: %schema{}} = cs) do
    now = Lightning.StandIn.now()

    row =
      cs
      |> CS.apply_changes()
      |> Map.update!(:id, &(&1 || Store.uuid()))
      |> put_if_field(:inserted_at, now)
      |> put_if_field(:updated_at, now)

    with :ok <- check_fks(schema, row, cs),
         :ok <- claim_unique(schema.__standin_unique__(row), row.id, cs) do
      {:ok, Store.put(row)}
    else
      {:error, cs} -> {:error, %{cs | action: :insert}}
    end
  end

  defp put_if_field(row, field, value) do
    if Map.has_key?(row, field) and Map.get(row, field) == nil, do: Map.put(row, field, value), else: row
  end

  def check_fks(schema, row, cs) do
    Enum.reduce_while(schema.__standin_fks__(), :ok, fn {field, parent, error_field, constraint}, :ok ->
      case Map.get(row, field) do
        nil ->
          {:cont, :ok}

        id ->
          if Store.get(parent, id),
            do: {:cont, :ok},
            else:
              {:halt,
               {:error, CS.add_error(cs, error_field, "does not exist", constraint: :assoc, constraint_name: constraint)}}
      end
    end)
  end

  def claim_unique(keys, id, cs) do
    Enum.reduce_while(keys, {:ok, []}, fn {key, field, message, constraint}, {:ok, claimed} ->
      if Store.claim(key, id) do
        {:cont, {:ok, [key | claimed]}}
      else
        Enum.each(claimed, &Store.release/1)
        {:halt, {:error, CS.add_error(cs, field, message, constraint: :unique, constraint_name: constraint)}}
      end
    end)
    |> case do
      {:ok, _} -> :ok
      error -> error
    end
  end

  # update/1 of a changeset: writes the changed row (unique keys moved along).
  def update(%Ecto.Changeset{valid?: false} = cs), do: {:error, %{cs | action: :update}}

  def update(%Ecto.Changeset{data: %schema{} = old} = cs) do
    row = CS.apply_changes(cs)
    row = if Map.has_key?(row, :updated_at), do: %{row | updated_at: Lightning.StandIn.now()}, else: row
    old_keys = Enum.map(schema.__standin_unique__(old), &elem(&1, 0))
    new_keys = Enum.reject(schema.__standin_unique__(row), &(elem(&1, 0) in old_keys))

    with :ok <- check_fks(schema, row, cs),
         :ok <- claim_unique(new_keys, row.id, cs) do
      for key <- old_keys -- Enum.map(schema.__standin_unique__(row), &elem(&1, 0)), do: Store.release(key)
      {:ok, Store.put(row)}
    else
      {:error, cs} -> {:error, %{cs | action: :update}}
    end
  end

  # delete/1: removes the row and, as the database's foreign keys do, the
  # rows that hang off it (a channel's requests and their events, a
  # project's project_users and channels, a user's project_users...).
  # A row that is already gone raises Ecto.StaleEntryError, as Ecto does.
  def delete(%schema{id: id} = struct) do
    case Store.get(schema, id) do
      nil ->
        raise Ecto.StaleEntryError,
          message: "attempted to delete a stale struct:\n\n#{inspect(struct)}\n"

      row ->
        delete_rows(schema, [row])
        {:ok, struct}
    end
  end

  # Deletes rows of one schema and, level by level, what hangs off them (one
  # table scan per child schema, however many rows).
  def delete_rows(_schema, []), do: :ok

  def delete_rows(schema, rows) do
    ids = MapSet.new(rows, & &1.id)

    for {child, fk} <- schema.__standin_cascade__(), Store.table?(child) do
      delete_rows(child, Store.filter(child, &MapSet.member?(ids, Map.get(&1, fk))))
    end

    for row <- rows do
      for {key, _, _, _} <- schema.__standin_unique__(row), do: Store.release(key)
      Store.delete(schema, row.id)
    end

    :ok
  end

  # preload/2: atoms, lists and nested keywords (project_users: :project).
  def preload(nil, _preloads), do: nil
  def preload(structs, preloads) when is_list(structs), do: Enum.map(structs, &preload(&1, preloads))

  def preload(%_{} = struct, preloads) do
    preloads
    |> List.wrap()
    |> Enum.reduce(struct, fn
      {assoc, nested}, acc -> load_assoc(acc, assoc, nested)
      assoc, acc when is_atom(assoc) -> load_assoc(acc, assoc, [])
    end)
  end

  defp load_assoc(%schema{} = struct, assoc, nested) do
    loaded =
      case schema.__standin_assoc__(assoc) do
        {:many, child, fk, where} ->
          Store.filter(child, fn row ->
            Map.get(row, fk) == struct.id and Enum.all?(where, fn {k, v} -> Map.get(row, k) == v end)
          end)

        {:one, parent, fk} ->
          Store.get(parent, Map.get(struct, fk))

        {:through, [first, second]} ->
          struct
          |> load_assoc(first, [second])
          |> Map.fetch!(first)
          |> Enum.map(&Map.fetch!(&1, second))
          |> Enum.reject(&is_nil/1)

        nil ->
          raise ArgumentError, "schema #{inspect(schema)} does not have association or embed #{inspect(assoc)}"
      end

    Map.put(struct, assoc, preload(loaded, nested))
  end
end

# --- schemas both profiles share ------------------------------------------------

defmodule Lightning.Projects.Project do
  @moduledoc false
  # lib/lightning/projects/project.ex (the fields chanload touches)
  use Lightning.StandIn.Schema,
    source: "projects",
    fields: [:id, :name, :description, :inserted_at, :updated_at],
    assocs: [project_users: {:many, Lightning.Projects.ProjectUser, :project_id, []}],
    cascade: [
      {Lightning.Projects.ProjectUser, :project_id},
      {Lightning.Channels.Channel, :project_id},
      {Lightning.Workflows.WebhookAuthMethod, :project_id}
    ]
end

defmodule Lightning.Projects.ProjectUser do
  @moduledoc false
  # lib/lightning/projects/project_user.ex
  use Lightning.StandIn.Schema,
    source: "project_users",
    fields: [:id, :user_id, :project_id, :role, :inserted_at, :updated_at],
    assocs: [
      project: {:one, Lightning.Projects.Project, :project_id},
      user: {:one, Lightning.Accounts.User, :user_id}
    ],
    fks: [
      {:user_id, Lightning.Accounts.User, :user, "project_users_user_id_fkey"},
      {:project_id, Lightning.Projects.Project, :project, "project_users_project_id_fkey"}
    ]

  @roles [:owner, :admin, :editor, :viewer]
  def roles, do: @roles
end

defmodule Lightning.StandIn.ProjectRows do
  @moduledoc false
  # Writes a project and its project_users rows (both profiles' create_project).
  alias Lightning.Projects.{Project, ProjectUser}
  alias Lightning.Store

  def insert(name, description, project_users) do
    now = Lightning.StandIn.now()
    project = Store.put(%Project{id: Store.uuid(), name: name, description: description, inserted_at: now, updated_at: now})

    rows =
      for pu <- project_users do
        Store.put(%ProjectUser{
          id: Store.uuid(),
          user_id: pu.user_id,
          project_id: project.id,
          role: pu.role,
          inserted_at: now,
          updated_at: now
        })
      end

    %{project | project_users: rows}
  end

  # project_users entries as given (atom or string keys, role atom or string).
  def entries(attrs) do
    case Lightning.StandIn.Changeset.fetch_param(attrs, :project_users) do
      {:ok, list} when is_list(list) ->
        Enum.map(list, fn entry ->
          entry = Map.new(entry)
          user_id = Map.get(entry, :user_id, Map.get(entry, "user_id"))
          role = Map.get(entry, :role, Map.get(entry, "role"))
          role = if is_binary(role), do: Enum.find(ProjectUser.roles(), &(Atom.to_string(&1) == role)), else: role
          %{user_id: user_id, role: role}
        end)

      _ ->
        nil
    end
  end
end

defmodule Lightning.StandIn.Listener do
  @moduledoc false
  # Both profiles' HTTP side: a listener on 127.0.0.1 (port 0: the OS picks)
  # whose every accepted connection gets a process of its own running
  # serve.(socket) (Cowboy's one process per connection). Returns the port.
  def listen(port, serve) do
    {:ok, lsock} =
      :gen_tcp.listen(port, [:binary, packet: :raw, active: false, reuseaddr: true, ip: {127, 0, 0, 1}, backlog: 1024, nodelay: true])

    {:ok, port} = :inet.port(lsock)
    spawn(fn -> accept(lsock, serve) end)
    port
  end

  defp accept(lsock, serve) do
    {:ok, sock} = :gen_tcp.accept(lsock)
    pid = spawn(fn -> receive(do: (:go -> serve.(sock))) end)
    :gen_tcp.controlling_process(sock, pid)
    send(pid, :go)
    accept(lsock, serve)
  end
end
