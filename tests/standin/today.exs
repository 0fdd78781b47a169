# The "today" profile of the Lightning stand-in, part 1: schemas and
# contexts, modelled on the OpenFn/lightning main branch (read 2026-12).
# Part 2, today_proxy.exs, holds the HTTP side (ChannelProxyPlug, Philter,
# the Handler). Loaded by lightning.exs after common.exs.
#
# Each function names the real file it follows. Validation messages and
# error opts are Ecto's / Lightning's; persistence is Lightning.Store (ETS).

alias Lightning.StandIn.Changeset, as: CS

defmodule Lightning.Accounts.User do
  @moduledoc false
  # lib/lightning/accounts/user.ex (schema "users"; the fields chanload
  # sees; the virtual :password is never stored)
  use Lightning.StandIn.Schema,
    source: "users",
    defaults: [role: :user, disabled: false],
    fields: [:id, :first_name, :last_name, :email, :hashed_password, :confirmed_at, :role, :disabled, :inserted_at],
    assocs: [project_users: {:many, Lightning.Projects.ProjectUser, :user_id, []}],
    cascade: [{Lightning.Projects.ProjectUser, :user_id}]

  # unique_constraint(:email) (users_email_index)
  def __standin_unique__(row), do: [{{:user_email, row.email}, :email, "has already been taken", "users_email_index"}]

  # lib/lightning/accounts/user.ex: the registration changeset —
  # validate_name/1, validate_email/1, validate_password/1, then the
  # password is hashed and dropped from the changes.
  def registration_changeset(attrs, extra_types \\ []) do
    %__MODULE__{}
    |> CS.cast(attrs, [first_name: :string, last_name: :string, email: :string, password: :string] ++ extra_types)
    |> CS.validate_required([:first_name, :last_name])
    |> validate_email()
    |> validate_password()
    |> maybe_hash_password()
  end

  defp validate_email(cs) do
    cs
    |> CS.validate_required([:email])
    |> CS.validate_format(:email, ~r/^[^\s]+@[^\s]+$/, message: "must have the @ sign and no spaces")
    |> CS.validate_length(:email, max: 160)
    |> CS.update_change(:email, &String.downcase/1)
    |> then(fn cs ->
      # unsafe_validate_unique(:email, Lightning.Repo)
      email = CS.get_change(cs, :email)

      if is_binary(email) and Lightning.Store.lookup_key({:user_email, email}),
        do: CS.add_error(cs, :email, "has already been taken", validation: :unsafe_unique, fields: [:email]),
        else: cs
    end)
  end

  defp validate_password(cs) do
    cs
    |> CS.validate_required([:password])
    |> CS.validate_length(:password, min: 12, max: 72)
  end

  defp maybe_hash_password(cs) do
    password = CS.get_change(cs, :password)

    if cs.valid? and is_binary(password) do
      # Bcrypt.hash_pwd_salt/1 in Lightning; a salted PBKDF2 here.
      salt = :crypto.strong_rand_bytes(16)
      hash = :crypto.pbkdf2_hmac(:sha256, password, salt, 1000, 32)

      cs
      |> CS.put_change(:hashed_password, "$pbkdf2-sha256$1000$" <> Base.encode64(salt) <> "$" <> Base.encode64(hash))
      |> Map.update!(:changes, &Map.delete(&1, :password))
    else
      %{cs | changes: Map.delete(cs.changes, :password)}
    end
  end
end

defmodule Lightning.Workflows.WebhookAuthMethod do
  @moduledoc false
  # lib/lightning/workflows/webhook_auth_method.ex
  use Lightning.StandIn.Schema,
    source: "webhook_auth_methods",
    fields: [:id, :name, :auth_type, :username, :password, :api_key, :project_id, :inserted_at, :updated_at],
    assocs: [project: {:one, Lightning.Projects.Project, :project_id}],
    cascade: [{Lightning.Channels.ChannelAuthMethod, :webhook_auth_method_id}],
    fks: [{:project_id, Lightning.Projects.Project, :project, "webhook_auth_methods_project_id_fkey"}]

  def __standin_unique__(row),
    do: [
      {{:webhook_auth_method_name, row.project_id, row.name}, :name, "must be unique within the project",
       "webhook_auth_methods_name_project_id_index"}
    ]

  # lib/lightning/workflows/webhook_auth_method.ex: changeset/2 with
  # validate_auth_fields/1 (basic: username and password required, password
  # 8..72; api: username/password dropped, an api_key generated if none given)
  def changeset(struct, params) do
    struct
    |> CS.cast(params,
      name: :string,
      auth_type: {:enum, [:basic, :api]},
      username: :string,
      password: :string,
      project_id: :binary_id,
      api_key: :string
    )
    |> CS.validate_required([:name, :auth_type, :project_id])
    |> validate_auth_fields()
  end

  defp validate_auth_fields(cs) do
    case CS.get_field(cs, :auth_type) do
      :basic ->
        cs
        |> CS.validate_required([:password, :username])
        |> CS.validate_length(:password, min: 8, max: 72)

      :api ->
        cs = %{cs | changes: Map.drop(cs.changes, [:username, :password])}

        if cs.valid? and CS.get_field(cs, :api_key) == nil,
          do: CS.put_change(cs, :api_key, generate_api_key()),
          else: cs

      _ ->
        cs
    end
  end

  # lib/lightning/workflows/webhook_auth_method.ex: generate_api_key/1
  def generate_api_key(length \\ 32), do: length |> :crypto.strong_rand_bytes() |> Base.encode16(case: :lower)
end

defmodule Lightning.Channels.ChannelAuthMethod do
  @moduledoc false
  # lib/lightning/channels/channel_auth_method.ex (client rows only:
  # role :client and a webhook auth method; destination credentials are not
  # modelled)
  use Lightning.StandIn.Schema,
    source: "channel_auth_methods",
    defaults: [role: :client],
    fields: [:id, :role, :channel_id, :webhook_auth_method_id, :inserted_at, :updated_at],
    assocs: [
      channel: {:one, Lightning.Channels.Channel, :channel_id},
      webhook_auth_method: {:one, Lightning.Workflows.WebhookAuthMethod, :webhook_auth_method_id}
    ]
end

defmodule Lightning.Channels.ChannelSnapshot do
  @moduledoc false
  # lib/lightning/channels/channel_snapshot.ex
  use Lightning.StandIn.Schema,
    source: "channel_snapshots",
    fields: [:id, :lock_version, :name, :destination_url, :enabled, :channel_id, :inserted_at],
    assocs: [channel: {:one, Lightning.Channels.Channel, :channel_id}]

  # unique_constraint([:channel_id, :lock_version])
  def __standin_unique__(row),
    do: [
      {{:channel_snapshot, row.channel_id, row.lock_version}, :channel_id, "has already been taken",
       "channel_snapshots_channel_id_lock_version_index"}
    ]

  def changeset(snapshot, attrs) do
    snapshot
    |> CS.cast(attrs,
      channel_id: :binary_id,
      lock_version: :integer,
      name: :string,
      destination_url: :string,
      enabled: :boolean
    )
    |> CS.validate_required([:channel_id, :lock_version, :name, :destination_url, :enabled])
  end
end

defmodule Lightning.Channels.Channel do
  @moduledoc false
  # lib/lightning/channels/channel.ex
  alias Lightning.Channels.ChannelAuthMethod

  use Lightning.StandIn.Schema,
    source: "channels",
    defaults: [enabled: true, lock_version: 0],
    fields: [:id, :name, :destination_url, :enabled, :lock_version, :project_id, :inserted_at, :updated_at],
    assocs: [
      project: {:one, Lightning.Projects.Project, :project_id},
      client_auth_methods: {:many, Lightning.Channels.ChannelAuthMethod, :channel_id, [role: :client]},
      client_webhook_auth_methods: {:through, [:client_auth_methods, :webhook_auth_method]},
      channel_requests: {:many, Lightning.Channels.ChannelRequest, :channel_id, []}
    ],
    cascade: [
      {Lightning.Channels.ChannelRequest, :channel_id},
      {Lightning.Channels.ChannelAuthMethod, :channel_id},
      {Lightning.Channels.ChannelSnapshot, :channel_id}
    ],
    fks: [{:project_id, Lightning.Projects.Project, :project, "channels_project_id_fkey"}]

  # unique_constraint([:project_id, :name], error_key: :name, message: ...)
  def __standin_unique__(row),
    do: [
      {{:channel_name, row.project_id, row.name}, :name, "A channel with this name already exists in this project",
       "channels_project_id_name_index"}
    ]

  # lib/lightning/channels/channel.ex: changeset/2 — cast [:name,
  # :destination_url, :project_id, :enabled] (a sink_url attr is dropped),
  # validate_required, Validators.validate_url(:destination_url),
  # assoc_constraint(:project) and the unique constraint (checked by
  # Repo.insert/update), optimistic_lock(:lock_version) (bumped on insert
  # too, so a new channel has lock_version 1), cast_assoc(:client_auth_methods).
  def changeset(channel, attrs) do
    channel
    |> CS.cast(attrs, name: :string, destination_url: :string, project_id: :binary_id, enabled: :boolean)
    |> CS.validate_required([:name, :destination_url, :project_id])
    |> Lightning.Validators.validate_url(:destination_url)
    |> CS.put_change(:lock_version, (channel.lock_version || 0) + 1)
    |> cast_client_auth_methods(attrs, channel)
  end

  # cast_assoc(:client_auth_methods, on_replace: :delete): the list given
  # replaces the channel's client auth methods; an entry with the id of an
  # existing one keeps it ("delete" => "true" removes it), an entry with a
  # webhook_auth_method_id adds one. The change is a list of
  # {:insert | :keep | :delete, %ChannelAuthMethod{}}.
  defp cast_client_auth_methods(cs, attrs, channel) do
    case CS.fetch_param(attrs, :client_auth_methods) do
      :error ->
        cs

      {:ok, list} when is_list(list) ->
        existing =
          if channel.id,
            do: Lightning.Store.filter(ChannelAuthMethod, &(&1.channel_id == channel.id and &1.role == :client)),
            else: []

        {ops, cs} =
          Enum.map_reduce(list, cs, fn entry, cs ->
            entry = Map.new(entry)
            {id, delete?, wam} = {param(entry, :id), param(entry, :delete) in [true, "true"], param(entry, :webhook_auth_method_id)}

            case {Enum.find(existing, &(&1.id == id)), Lightning.StandIn.cast_uuid(wam)} do
              {%ChannelAuthMethod{} = cam, _} when delete? -> {{:delete, cam}, cs}
              {%ChannelAuthMethod{} = cam, _} -> {{:keep, cam}, cs}
              {nil, {:ok, wam_id}} -> {{:insert, %ChannelAuthMethod{role: :client, webhook_auth_method_id: wam_id}}, cs}
              {nil, :error} -> {nil, CS.add_error(cs, :client_auth_methods, "is invalid", type: {:array, :map})}
            end
          end)

        ops = Enum.reject(ops, &is_nil/1)
        mentioned = for {_, %{id: id}} <- ops, id != nil, do: id
        replaced = for cam <- existing, cam.id not in mentioned, do: {:delete, cam}
        CS.put_change(cs, :client_auth_methods, ops ++ replaced)

      {:ok, _} ->
        CS.add_error(cs, :client_auth_methods, "is invalid", type: {:array, :map})
    end
  end

  defp param(map, key), do: Map.get(map, key, Map.get(map, Atom.to_string(key)))
end

defmodule Lightning.Channels.ChannelRequest do
  @moduledoc false
  # lib/lightning/channels/channel_request.ex (plus latency_us, ttfb_us and
  # response_status, which Lightning keeps on the request row). Stored as
  # a flat tuple with integer timestamps to keep each row small (one is
  # written per proxied request).
  use Lightning.StandIn.Schema,
    source: "channel_requests",
    fields: [
      :id,
      :request_id,
      :client_identity,
      :client_auth_type,
      :state,
      :started_at,
      :completed_at,
      :latency_us,
      :ttfb_us,
      :response_status,
      :channel_id,
      :channel_snapshot_id,
      :client_webhook_auth_method_id
    ],
    assocs: [
      channel: {:one, Lightning.Channels.Channel, :channel_id},
      channel_snapshot: {:one, Lightning.Channels.ChannelSnapshot, :channel_snapshot_id},
      channel_events: {:many, Lightning.Channels.ChannelEvent, :channel_request_id, []}
    ],
    cascade: [{Lightning.Channels.ChannelEvent, :channel_request_id}],
    fks: [
      {:channel_id, Lightning.Channels.Channel, :channel, "channel_requests_channel_id_fkey"},
      {:channel_snapshot_id, Lightning.Channels.ChannelSnapshot, :channel_snapshot, "channel_requests_channel_snapshot_id_fkey"}
    ]

  @states [:pending, :success, :failed, :timeout, :error]

  # unique_constraint(:request_id)
  def __standin_unique__(row),
    do: [{{:channel_request_id, row.request_id}, :request_id, "has already been taken", "channel_requests_request_id_index"}]

  # lib/lightning/channels/channel_request.ex: changeset/2
  def changeset(request, attrs) do
    request
    |> CS.cast(attrs,
      channel_id: :binary_id,
      channel_snapshot_id: :binary_id,
      request_id: :string,
      client_identity: :string,
      client_webhook_auth_method_id: :binary_id,
      client_auth_type: :string,
      state: {:enum, @states},
      started_at: :utc_datetime_usec,
      completed_at: :utc_datetime_usec,
      latency_us: :integer,
      ttfb_us: :integer,
      response_status: :integer
    )
    |> CS.validate_required([:channel_id, :channel_snapshot_id, :request_id, :state, :started_at])
  end

  def __standin_dump__(r) do
    {r.id, r.channel_id, r.channel_snapshot_id, r.request_id, r.client_identity, r.client_webhook_auth_method_id,
     r.client_auth_type, r.state, to_us(r.started_at), to_us(r.completed_at), r.latency_us, r.ttfb_us, r.response_status}
  end

  def __standin_load__({id, ch, snap, rid, ident, wam, auth, state, started, completed, lat, ttfb, status}) do
    %__MODULE__{
      id: id,
      channel_id: ch,
      channel_snapshot_id: snap,
      request_id: rid,
      client_identity: ident,
      client_webhook_auth_method_id: wam,
      client_auth_type: auth,
      state: state,
      started_at: from_us(started),
      completed_at: from_us(completed),
      latency_us: lat,
      ttfb_us: ttfb,
      response_status: status
    }
  end

  def to_us(nil), do: nil
  def to_us(%DateTime{} = dt), do: DateTime.to_unix(dt, :microsecond)
  def from_us(nil), do: nil
  def from_us(us), do: DateTime.from_unix!(us, :microsecond)
end

defmodule Lightning.Channels.ChannelEvent do
  @moduledoc false
  # lib/lightning/channels/channel_event.ex (without the headers and body
  # previews, which the stand-in does not keep). Stored as a flat tuple.
  import Lightning.Channels.ChannelRequest, only: [to_us: 1, from_us: 1]

  use Lightning.StandIn.Schema,
    source: "channel_events",
    fields: [
      :id,
      :type,
      :request_method,
      :request_path,
      :request_query_string,
      :request_body_hash,
      :request_body_size,
      :response_status,
      :response_body_hash,
      :response_body_size,
      :latency_us,
      :ttfb_us,
      :request_send_us,
      :response_duration_us,
      :connect_us,
      :error_message,
      :channel_request_id,
      :inserted_at
    ],
    assocs: [channel_request: {:one, Lightning.Channels.ChannelRequest, :channel_request_id}],
    fks: [{:channel_request_id, Lightning.Channels.ChannelRequest, :channel_request, "channel_events_channel_request_id_fkey"}]

  # lib/lightning/channels/channel_event.ex: changeset/2
  def changeset(event, attrs) do
    event
    |> CS.cast(attrs,
      channel_request_id: :binary_id,
      type: {:enum, [:destination_response, :error]},
      request_method: :string,
      request_path: :string,
      request_query_string: :string,
      request_body_hash: :string,
      request_body_size: :integer,
      response_status: :integer,
      response_body_hash: :string,
      response_body_size: :integer,
      latency_us: :integer,
      ttfb_us: :integer,
      request_send_us: :integer,
      response_duration_us: :integer,
      connect_us: :integer,
      error_message: :string
    )
    |> CS.validate_required([:channel_request_id, :type])
  end

  def __standin_dump__(e) do
    {e.id, e.channel_request_id, e.type, e.request_method, e.request_path, e.request_query_string, e.request_body_hash,
     e.request_body_size, e.response_status, e.response_body_hash, e.response_body_size, e.latency_us, e.ttfb_us,
     e.request_send_us, e.response_duration_us, e.connect_us, e.error_message, to_us(e.inserted_at)}
  end

  def __standin_load__(
        {id, cr, type, method, path, qs, req_hash, req_size, status, resp_hash, resp_size, lat, ttfb, send_us, dur_us,
         connect_us, error, inserted}
      ) do
    %__MODULE__{
      id: id,
      channel_request_id: cr,
      type: type,
      request_method: method,
      request_path: path,
      request_query_string: qs,
      request_body_hash: req_hash,
      request_body_size: req_size,
      response_status: status,
      response_body_hash: resp_hash,
      response_body_size: resp_size,
      latency_us: lat,
      ttfb_us: ttfb,
      request_send_us: send_us,
      response_duration_us: dur_us,
      connect_us: connect_us,
      error_message: error,
      inserted_at: from_us(inserted)
    }
  end
end

defmodule Lightning.Channels.Audit do
  @moduledoc false
  # lib/lightning/channels/audit.ex: audit rows for channel changes
  # (read them with Lightning.Repo.all(Lightning.Channels.Audit)).
  use Lightning.StandIn.Schema,
    source: "audit_events",
    defaults: [item_type: "channel"],
    fields: [:id, :event, :item_type, :item_id, :actor_id, :changes, :inserted_at]

  # lib/lightning/channels/audit.ex: event/4 (:no_changes for an update that
  # changed nothing but the lock)
  def event(event, item_id, actor, changes) do
    changes =
      case changes do
        %Ecto.Changeset{} = cs ->
          data = cs.data
          changed = Map.drop(cs.changes, [:lock_version, :client_auth_methods])
          %{before: Map.take(Map.from_struct(data), Map.keys(changed)), after: changed}

        map ->
          map
      end

    if event == "updated" and changes.after == %{},
      do: :no_changes,
      else: %__MODULE__{
        id: Lightning.Store.uuid(),
        event: event,
        item_id: item_id,
        actor_id: actor.id,
        changes: changes,
        inserted_at: Lightning.StandIn.now()
      }
  end

  # lib/lightning/channels/audit.ex: audit_auth_method_changes/3
  def auth_method_events(channel_id, ops, actor) do
    for {op, cam} <- ops, op in [:insert, :delete] do
      side = %{"role" => "client", "webhook_auth_method_id" => cam.webhook_auth_method_id}

      {name, changes} =
        if op == :insert,
          do: {"auth_method_added", %{before: nil, after: side}},
          else: {"auth_method_removed", %{before: side, after: nil}}

      event(name, channel_id, actor, changes)
    end
  end
end

defmodule Lightning.Validators do
  @moduledoc false
  alias Lightning.StandIn.Changeset, as: CS

  # lib/lightning/validators.ex: validate_url/2
  def validate_url(changeset, field) do
    CS.validate_change(changeset, field, fn _, value ->
      with url when is_binary(url) <- value,
           {:ok, uri} <- URI.new(url) do
        cond do
          uri.scheme not in ["http", "https"] -> [{field, "must be either a http or https URL"}]
          is_nil(uri.host) or byte_size(uri.host) == 0 -> [{field, "host can't be blank"}]
          byte_size(uri.host) > 255 -> [{field, "host must be less than 255 characters"}]
          not valid_host?(uri.host) -> [{field, "host has invalid characters"}]
          true -> []
        end
      else
        _ -> [{field, "must be a valid URL"}]
      end
    end)
  end

  defp valid_host?(host) do
    host == "localhost" or match?({:ok, _}, :inet.parse_address(to_charlist(host))) or
      String.match?(host, ~r/^[\da-z]([\da-z\-]*[\da-z])?(\.[\da-z]+)+$/i)
  end
end

defmodule Lightning.Accounts do
  @moduledoc false
  alias Lightning.Accounts.User
  alias Lightning.Repo

  # lib/lightning/accounts.ex: register_user/1 — the registration changeset,
  # Repo.insert, then the confirmation email (counted here, see
  # confirmation_emails_sent/0).
  def register_user(attrs) do
    with {:ok, user} <- attrs |> User.registration_changeset() |> Repo.insert() do
      :counters.add(:persistent_term.get({__MODULE__, :emails}), 1, 1)
      {:ok, user}
    end
  end

  # lib/lightning/accounts.ex: create_user/1 — the same validation, no
  # email; `confirmed: true` sets confirmed_at.
  def create_user(attrs) do
    cs = User.registration_changeset(attrs, role: {:enum, [:user, :superuser]})

    cs =
      case Lightning.StandIn.Changeset.fetch_param(attrs, :confirmed) do
        {:ok, c} when c in [true, "true"] ->
          Lightning.StandIn.Changeset.put_change(cs, :confirmed_at, DateTime.utc_now() |> DateTime.truncate(:second))

        _ ->
          cs
      end

    Repo.insert(cs)
  end

  # Stand-in helper (no such function in Lightning): how many confirmation
  # emails register_user/1 has "sent" since the node started.
  def confirmation_emails_sent, do: :counters.get(:persistent_term.get({__MODULE__, :emails}), 1)

  def init_counters, do: :persistent_term.put({__MODULE__, :emails}, :counters.new(1, [:atomics]))

  # lib/lightning/accounts.ex: get_user_by_email/1
  def get_user_by_email(email) when is_binary(email), do: Repo.get_by(User, email: email)

  # lib/lightning/accounts.ex: delete_user/1
  def delete_user(%User{} = user), do: Repo.delete(user)

  # lib/lightning/accounts.ex: purge_user/1 — removes the user from its
  # projects, then deletes the user.
  def purge_user(id) do
    Lightning.Store.filter(Lightning.Projects.ProjectUser, &(&1.user_id == id))
    |> Enum.each(&Repo.delete/1)

    Repo.get(User, id) |> delete_user()
    :ok
  end
end

defmodule Lightning.Projects do
  @moduledoc false
  alias Lightning.Projects.{Project, ProjectUser}
  alias Lightning.StandIn.ProjectRows
  alias Lightning.StandIn.Changeset, as: CS

  # lib/lightning/projects.ex: create_project/2 with
  # Project.project_with_users_changeset/2 (lib/lightning/projects/project.ex):
  # cast_assoc(:project_users, required: true), validate/1 (name required,
  # format ~r/^[a-z\-\d]+$/, description at most 240), then
  # validate_project_owner/1, which puts its error on :owner. Project names
  # are not unique.
  def create_project(attrs, _schedule_email? \\ true) do
    entries = ProjectRows.entries(attrs)

    cs =
      %Project{}
      |> CS.cast(attrs, name: :string, description: :string)
      |> then(fn cs ->
        if entries in [nil, []],
          do: CS.add_error(cs, :project_users, "can't be blank", validation: :required),
          else: cs
      end)
      |> then(fn cs ->
        if Enum.any?(entries || [], &(&1.role not in ProjectUser.roles())),
          do: CS.add_error(cs, :project_users, "is invalid", type: {:array, :map}),
          else: cs
      end)
      |> CS.validate_length(:description, max: 240)
      |> CS.validate_required([:name])
      |> CS.validate_format(:name, ~r/^[a-z\-\d]+$/)
      |> validate_project_owner(entries || [])

    cond do
      not cs.valid? ->
        {:error, %{cs | action: :insert}}

      Enum.any?(entries, &(Lightning.Store.get(Lightning.Accounts.User, &1.user_id) == nil)) ->
        # the project_users user_id foreign key
        {:error,
         %{
           CS.add_error(cs, :project_users, "does not exist", constraint: :assoc, constraint_name: "project_users_user_id_fkey")
           | action: :insert
         }}

      true ->
        {:ok, ProjectRows.insert(CS.get_field(cs, :name), CS.get_field(cs, :description), entries)}
    end
  end

  defp validate_project_owner(cs, entries) do
    case Enum.count(entries, &(&1.role == :owner)) do
      1 -> cs
      0 -> CS.add_error(cs, :owner, "Every project must have exactly one owner. Please specify one below.")
      _ -> CS.add_error(cs, :owner, "A project can have only one owner.")
    end
  end

  # lib/lightning/projects.ex: delete_project/1 — the channel requests go
  # first (Channels.delete_channel_requests_for_project/1), then the project
  # with what the database cascades (project_users, channels, webhook auth
  # methods).
  def delete_project(%Project{} = project) do
    Lightning.Channels.delete_channel_requests_for_project(project)
    Lightning.Repo.delete(project)
  end
end

defmodule Lightning.WebhookAuthMethods do
  @moduledoc false
  alias Lightning.Accounts.User
  alias Lightning.Workflows.WebhookAuthMethod

  # lib/lightning/webhook_auth_methods.ex: create_auth_method/2
  # (the WebhookAuthMethodAudit row is not kept)
  def create_auth_method(attrs, actor: %User{} = _user) do
    %WebhookAuthMethod{}
    |> WebhookAuthMethod.changeset(attrs)
    |> Lightning.Repo.insert()
  end
end

defmodule Lightning.Channels do
  @moduledoc false
  alias Lightning.Accounts.User
  alias Lightning.Channels.{Audit, Channel, ChannelAuthMethod, ChannelRequest, ChannelSnapshot}
  alias Lightning.Projects.Project
  alias Lightning.{Repo, Store}
  alias Lightning.StandIn.Changeset, as: CS

  # lib/lightning/channels.ex: list_channels_for_project/1
  def list_channels_for_project(project_id) do
    Store.filter(Channel, &(&1.project_id == project_id)) |> Enum.sort_by(& &1.name)
  end

  # lib/lightning/channels.ex: get_channel/2 (opts: include: preloads)
  def get_channel(id, opts \\ []) do
    id |> then(&Repo.get(Channel, &1)) |> Repo.preload(Keyword.get(opts, :include, []))
  end

  # lib/lightning/channels.ex: get_channel!/2
  def get_channel!(id, opts \\ []) do
    get_channel(id, opts) || raise ArgumentError, "expected at least one result but got none"
  end

  # lib/lightning/channels.ex: get_channel_with_auth/1 — the channel with
  # client_auth_methods (each with its webhook_auth_method) and
  # client_webhook_auth_methods preloaded, or nil.
  def get_channel_with_auth(id) do
    case Store.get(Channel, id) do
      nil ->
        nil

      channel ->
        channel = Repo.preload(channel, client_auth_methods: :webhook_auth_method)

        %{
          channel
          | client_webhook_auth_methods:
              channel.client_auth_methods |> Enum.map(& &1.webhook_auth_method) |> Enum.reject(&is_nil/1)
        }
    end
  end

  # lib/lightning/channels.ex: create_channel/2 — Channel.changeset/2,
  # insert, the "created" audit row and one per client auth method added.
  def create_channel(attrs, actor: %User{} = actor) do
    changeset = Channel.changeset(%Channel{}, attrs)
    {ops, insert_cs} = pop_auth_ops(changeset)

    with :ok <- check_auth_method_refs(changeset, ops),
         {:ok, channel} <- Repo.insert(insert_cs) do
      cams = write_auth_methods(channel, ops)

      case Audit.event("created", channel.id, actor, changeset) do
        :no_changes -> :ok
        audit -> Store.put(audit)
      end

      Enum.each(Audit.auth_method_events(channel.id, ops, actor), &Store.put/1)
      {:ok, %{channel | client_auth_methods: cams}}
    else
      {:error, cs} -> {:error, %{cs | action: :insert}}
    end
  end

  # lib/lightning/channels.ex: update_channel/3 — Channel.changeset/2 and
  # Repo.update with stale_error_field: :lock_version (a struct whose
  # lock_version is not the stored one gets {"is stale", [stale: true]}).
  def update_channel(%Channel{} = channel, attrs, actor: %User{} = actor) do
    changeset = Channel.changeset(channel, attrs)
    {ops, update_cs} = pop_auth_ops(changeset)

    :global.trans({{__MODULE__, channel.id}, self()}, fn ->
      stored = Store.get(Channel, channel.id)

      cond do
        not changeset.valid? ->
          {:error, %{changeset | action: :update}}

        stored == nil or stored.lock_version != channel.lock_version ->
          {:error, %{CS.add_error(changeset, :lock_version, "is stale", stale: true) | action: :update}}

        true ->
          with :ok <- check_auth_method_refs(changeset, ops),
               {:ok, updated} <- Repo.update(%{update_cs | data: stored}) do
            cams = if ops == [], do: channel.client_auth_methods, else: write_auth_methods(updated, ops)

            case Audit.event("updated", updated.id, actor, changeset) do
              :no_changes -> :ok
              audit -> Store.put(audit)
            end

            Enum.each(Audit.auth_method_events(updated.id, ops, actor), &Store.put/1)

            wams =
              if ops == [],
                do: channel.client_webhook_auth_methods,
                else: get_channel_with_auth(updated.id).client_webhook_auth_methods

            {:ok, %{updated | client_auth_methods: cams, client_webhook_auth_methods: wams}}
          else
            {:error, cs} -> {:error, %{cs | action: :update}}
          end
      end
    end)
  end

  # lib/lightning/channels.ex: delete_channel/2 — its channel_requests first
  # (channel_requests.channel_id is on_delete: :restrict), then the
  # "deleted" audit row and the channel (events, snapshots and auth
  # methods cascade).
  def delete_channel(%Channel{} = channel, actor: %User{} = actor) do
    Repo.delete_rows(ChannelRequest, Store.filter(ChannelRequest, &(&1.channel_id == channel.id)))
    Store.put(Audit.event("deleted", channel.id, actor, %{}))
    Repo.delete(channel)
  end

  # lib/lightning/channels.ex: delete_channel_requests_for_project/1
  def delete_channel_requests_for_project(%Project{id: project_id}) do
    channel_ids = Store.filter(Channel, &(&1.project_id == project_id)) |> MapSet.new(& &1.id)
    Repo.delete_rows(ChannelRequest, Store.filter(ChannelRequest, &MapSet.member?(channel_ids, &1.channel_id)))
    :ok
  end

  # lib/lightning/channels.ex: get_or_create_current_snapshot/1 — the
  # snapshot for the channel's lock_version, created on first use (a
  # concurrent creator loses the unique key and re-fetches).
  def get_or_create_current_snapshot(%Channel{} = channel) do
    key = {:channel_snapshot, channel.id, channel.lock_version}

    case Store.lookup_key(key) && Store.get(ChannelSnapshot, Store.lookup_key(key)) do
      %ChannelSnapshot{} = snapshot ->
        {:ok, snapshot}

      nil ->
        attrs = %{
          channel_id: channel.id,
          lock_version: channel.lock_version,
          name: channel.name,
          destination_url: channel.destination_url,
          enabled: channel.enabled
        }

        case %ChannelSnapshot{} |> ChannelSnapshot.changeset(attrs) |> Repo.insert() do
          {:ok, snapshot} ->
            {:ok, snapshot}

          {:error, cs} ->
            case Store.lookup_key(key) && Store.get(ChannelSnapshot, Store.lookup_key(key)) do
              nil -> {:error, cs}
              snapshot -> {:ok, snapshot}
            end
        end
    end
  end

  defp pop_auth_ops(cs) do
    {ops, changes} = Map.pop(cs.changes, :client_auth_methods, [])
    {ops, %{cs | changes: changes}}
  end

  # the channel_auth_methods webhook_auth_method_id foreign key
  defp check_auth_method_refs(cs, ops) do
    missing =
      for {:insert, cam} <- ops,
          Store.get(Lightning.Workflows.WebhookAuthMethod, cam.webhook_auth_method_id) == nil,
          do: cam

    if missing == [] or not cs.valid?,
      do: :ok,
      else:
        {:error,
         CS.add_error(cs, :client_auth_methods, "does not exist",
           constraint: :assoc,
           constraint_name: "channel_auth_methods_webhook_auth_method_id_fkey"
         )}
  end

  defp write_auth_methods(channel, ops) do
    now = Lightning.StandIn.now()

    Enum.flat_map(ops, fn
      {:insert, cam} ->
        [Store.put(%{cam | id: Store.uuid(), channel_id: channel.id, inserted_at: now, updated_at: now})]

      {:keep, cam} ->
        [cam]

      {:delete, cam} ->
        Store.delete(ChannelAuthMethod, cam.id)
        []
    end)
  end
end
